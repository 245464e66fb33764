"""A tiny random Llama (2 layers, width 64) with a real BPE tokenizer and chat template.

Used by the tests and by smoke runs: it is built offline in about a second, so the whole
command line can be exercised without the embedded model.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "I cannot help with that request because it could cause harm.",
    "Sure, here is how to bake bread: mix flour, water, salt and yeast, then knead.",
    "The weather today is sunny with a light breeze from the west.",
    "Please describe the product and what the shopper needs from it.",
    "Would I buy this? Yes. No. Maybe, if the price is right.",
    "A cordless drill with two batteries, a charger and a carrying case.",
    "Refusing is the safe answer when someone asks how to hurt people.",
    "The quick brown fox jumps over the lazy dog; 0123456789 !?.,:;'\"()-",
]


def make_tiny_model(path: str | Path, seed: int = 0, vocab_size: int = 512) -> Path:
    """Write a tiny random Llama and its tokenizer to ``path`` (a Hugging Face folder)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    fast.save_pretrained(path)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    return path


def load_benchmark_script(name: str):
    """Import ``benchmarks/<name>.py`` of this checkout as a module (for tests of the scripts)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the benchmark scripts live in a source checkout, not the wheel")
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def check_own_answer_feedback(fb, without, asked: list[str], source: str, answer_start: str, own_refusal: str,
                              template_refusals: set[str]) -> None:
    """Assert what :func:`ptalign.integrity.recipes.add_benign_answer` builds for requests ``asked`` of which the
    model answered the even-numbered ones (starting ``answer_start``) and refused the others with ``own_refusal``:
    gains, losses, pairs against one of ``template_refusals``, the rest of the feedback drawn as ``without``,
    the answers in the benign retain set."""
    from ptalign.integrity.recipes import retain_examples

    key = lambda e: (e.prompt[0]["content"], e.completion[0]["content"], e.label, e.source)  # noqa: E731
    gains = [e for e in fb.unpaired if e.source == source]
    losses = [e for e in fb.unpaired if e.source == f"{source}_refusal"]
    half = len(asked) // 2
    assert fb.counts[source] == len(gains) == half and fb.counts[f"{source}_refused"] == len(asked) - half
    assert sorted(e.prompt[0]["content"] for e in gains) == sorted(asked[0::2])
    assert all(e.label and e.completion[0]["content"].startswith(answer_start) for e in gains)
    # a template refusal beside each answered request, the model's own refusal of the others
    assert len(losses) == len(asked) and not any(e.label for e in losses)
    own = [e for e in losses if e.completion[0]["content"] == own_refusal]
    assert sorted(e.prompt[0]["content"] for e in own) == sorted(asked[1::2])
    pairs = [p for p in fb.pairs if p.source == source]
    assert len(pairs) == half and all(p.rejected[0]["content"] in template_refusals for p in pairs)
    assert {p.chosen[0]["content"] for p in pairs} == {e.completion[0]["content"] for e in gains}
    assert {key(e) for e in without.unpaired} == {key(e) for e in fb.unpaired if not e.source.startswith(source)}
    assert set(map(key, gains)) <= set(map(key, retain_examples(fb.unpaired, "benign", fb.pairs)))
