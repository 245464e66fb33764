"""CompletionScorer's length-sorted chunks give the same log-probs and gradients as one padded pass."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ptalign.reference import CompletionScorer, length_chunks


def _batch(lengths, width, prompt=3, vocab=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), width), generator=g)
    pos = torch.arange(width)
    am = (pos[None] < torch.tensor(lengths)[:, None]).long()
    cm = am * (pos[None] >= prompt).long()
    return ids * am, am, cm


def test_chunks_sort_by_length_and_trim_to_longest_row():
    _, am, _ = _batch([5, 9, 2, 7], 12)
    chunks = length_chunks(am, chunk_tokens=10)
    assert [(r.tolist(), w) for r, w in chunks] == [([2, 0], 5), ([3, 1], 9)]
    # 2 rows x 5 = 10 >= 10 closes the first chunk; the rest form the last one


def test_no_chunking_when_disabled_single_or_left_padded():
    _, am, _ = _batch([5, 9, 2, 7], 12)
    assert length_chunks(am, 0) is None
    assert length_chunks(am[:1], 10) is None
    assert length_chunks(am.flip(1), 10) is None  # left padding: trimming would cut tokens
    full = torch.ones(3, 6, dtype=torch.long)
    assert length_chunks(full, 1000) is None  # one chunk as wide as the batch: nothing to gain


def test_chunked_logps_and_grads_equal_one_pass():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).float()
    ids, am, cm = _batch([20, 7, 33, 12, 40, 9], 40)
    results = []
    for chunk_tokens in (0, 30):
        model.zero_grad()
        logps, n = CompletionScorer(model, chunk_tokens)(ids, am, cm)
        logps.sum().backward()
        results.append((logps.detach(), n, model.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    (a, na, ga), (b, nb, gb) = results
    assert torch.equal(na, nb) and na.tolist() == [17, 4, 30, 9, 37, 6]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)
