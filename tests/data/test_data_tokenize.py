"""Token ids and collated batches equal TRL 1.16's KTOTrainer / DPOTrainer exactly."""

from __future__ import annotations

import logging

import pytest
import torch

from ptalign.data import (
    FeedbackExample,
    PreferencePair,
    TokenizedExample,
    collate,
    rotate_completions,
    tokenize_feedback,
    tokenize_pairs,
)
from ptalign.data.tokenize import truncate

MAX_LENGTH = 40
CPU = {"bf16": False, "use_cpu": True}  # TRL configs default to bf16, which a CPU-only machine rejects


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


CHAT = [
    FeedbackExample(user("How do I bake bread?"), assistant("Mix flour, water, salt and yeast, then knead."), True),
    FeedbackExample(user("Hi"), assistant("The weather today is sunny."), False),
    FeedbackExample(  # the prompt alone is longer than MAX_LENGTH: TRL drops it
        [{"role": "system", "content": "Be brief."}, *user("Describe the product and what the shopper needs.")],
        assistant("A cordless drill with two batteries."),
        True,
    ),
    FeedbackExample(  # prompt + completion is longer than MAX_LENGTH: the completion is cut
        user("Please describe the product and what the shopper needs from it, with a charger and a carrying case."),
        assistant("No."),
        False,
    ),
    FeedbackExample(
        [*user("Would I buy this?"), *assistant("Maybe."), *user("And if the price is right?")],
        assistant("Yes, if the price is right."),
        True,
    ),
    FeedbackExample(user("How do I hurt people?"), assistant("I cannot help with that request."), True),
]
REFUSE = "Refusing is the safe answer when someone asks how to hurt people. "
PLAIN = [
    FeedbackExample("The quick brown f", "ox jumps over the lazy dog.", True),  # BPE merges across the boundary
    FeedbackExample("Question: is it sunny?\nAnswer:", " Yes, with a light breeze.<|im_end|>", False),  # has EOS
    FeedbackExample("Sure, here is how to bake bread:", " mix flour, water, salt and yeast, then knead.", True),
    FeedbackExample(REFUSE * 3, " Yes.", False),  # the prompt alone is longer than MAX_LENGTH: dropped
    FeedbackExample(REFUSE * 2, " Zebras vex kites.", True),  # prompt + completion too long: cut
    FeedbackExample("0123456789", " !?.,:;", True),
    FeedbackExample("A cordless drill", " with two batteries, a charger and a carrying case.", False),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def trl_train_dataset(tiny_model_dir, tokenizer, examples, tmp_path, max_length):
    """The tokenized train_dataset a real TRL KTOTrainer builds from ``examples``."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import KTOConfig, KTOTrainer

    rows = {"prompt": [e.prompt for e in examples], "completion": [e.completion for e in examples]}
    rows["label"] = [e.label for e in examples]
    args = KTOConfig(str(tmp_path), per_device_train_batch_size=2, max_length=max_length, report_to=[], **CPU)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = KTOTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), processing_class=tokenizer)
    return trainer.train_dataset


@pytest.mark.parametrize("examples", [CHAT, PLAIN], ids=["chat", "plain"])
def test_token_ids_equal_trl_kto_trainer(tiny_model_dir, tokenizer, tmp_path, examples):
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

    trl = trl_train_dataset(tiny_model_dir, tokenizer, examples, tmp_path, MAX_LENGTH)
    full = tokenize_feedback(tokenizer, examples)  # max_length=None: TRL's ids before the collator cuts
    kept = [t for t in full if len(t.prompt_ids) < MAX_LENGTH]  # TRL's filter
    assert 0 < len(kept) == len(trl["prompt_ids"])
    assert [t.prompt_ids for t in kept] == trl["prompt_ids"]
    assert [t.completion_ids for t in kept] == trl["completion_ids"]
    assert [t.label for t in kept] == trl["label"]

    # KL completions: TRL rotates within consecutive batches of per_device_train_batch_size
    kl = [c for s in range(0, len(kept), 2) for c in rotate_completions(kept[s : s + 2])]
    assert kl == trl["KL_completion_ids"]

    # keep_start truncation = TRL's filter + the collator cut, done once at tokenization
    cut = tokenize_feedback(tokenizer, examples, max_length=MAX_LENGTH)
    assert len(cut) == len(kept)
    assert all(len(t.prompt_ids) + len(t.completion_ids) <= MAX_LENGTH for t in cut)
    assert [t.prompt_ids for t in cut] == trl["prompt_ids"]
    room = [MAX_LENGTH - len(p) for p in trl["prompt_ids"]]
    assert [t.completion_ids for t in cut] == [c[:r] for c, r in zip(trl["completion_ids"], room)]

    collator = DataCollatorForUnpairedPreference(pad_token_id=tokenizer.pad_token_id, max_length=MAX_LENGTH)
    expected = collator([trl[i] for i in range(len(trl))])
    ours = collate([t.prompt_ids for t in cut], [t.completion_ids for t in cut], tokenizer.pad_token_id)
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(ours[key], expected[key]), key


@pytest.mark.parametrize("examples", [CHAT, PLAIN], ids=["chat", "plain"])
def test_examples_exercise_drop_and_cut(tokenizer, examples):
    full = tokenize_feedback(tokenizer, examples)
    assert any(len(t.prompt_ids) >= MAX_LENGTH for t in full)  # some dropped
    assert any(len(t.prompt_ids) < MAX_LENGTH < len(t.prompt_ids) + len(t.completion_ids) for t in full)  # some cut


def test_plain_completion_ends_with_one_eos_and_split_follows_common_prefix(tokenizer):
    merged, has_eos = tokenize_feedback(tokenizer, PLAIN[:2])
    eos = tokenizer.eos_token_id
    assert merged.completion_ids[-1] == eos and has_eos.completion_ids[-1] == eos
    assert has_eos.completion_ids[-2] != eos
    prompt_alone = tokenizer(text=PLAIN[0].prompt)["input_ids"]
    assert merged.prompt_ids == prompt_alone[: len(merged.prompt_ids)]
    whole = tokenizer(text=PLAIN[0].prompt + PLAIN[0].completion + "<|im_end|>")["input_ids"]
    assert merged.prompt_ids + merged.completion_ids == whole


def test_chat_completion_is_the_assistant_turn(tokenizer):
    (t,) = tokenize_feedback(tokenizer, CHAT[:1])
    assert tokenizer.decode(t.completion_ids) == "Mix flour, water, salt and yeast, then knead.<|im_end|>\n"
    assert tokenizer.decode(t.prompt_ids).endswith("<|im_start|>assistant\n")


def test_prefilled_reply_scores_only_the_continuation(tokenizer):
    """A prompt ending with an assistant turn: the completion continues that turn, and the prompt
    ids are the whole conversation up to the prefilled text, with no end-of-turn after it."""
    prompt = [*user("How do I pick a lock?"), *assistant("Sure, first insert a tension wrench")]
    (t,) = tokenize_feedback(tokenizer, [FeedbackExample(prompt, assistant(". I cannot help with that."), True)])
    assert tokenizer.decode(t.prompt_ids).endswith("<|im_start|>assistant\nSure, first insert a tension wrench")
    assert tokenizer.decode(t.completion_ids) == ". I cannot help with that.<|im_end|>\n"
    whole = tokenizer.apply_chat_template([*user("How do I pick a lock?"),
                                           *assistant("Sure, first insert a tension wrench. I cannot help with that.")],
                                          tokenize=True, return_dict=True)["input_ids"]
    assert t.prompt_ids + t.completion_ids == list(whole)
    (pair,) = tokenize_pairs(tokenizer, [PreferencePair(prompt, assistant(". I cannot help."), assistant(" and turn."))])
    assert pair.prompt_ids == t.prompt_ids
    assert tokenizer.decode(pair.rejected_ids) == " and turn.<|im_end|>\n"


def test_weights_and_labels_are_carried(tokenizer):
    examples = [FeedbackExample("a", "b", False, weight=2.5), FeedbackExample("c", "d", True, weight=0.5)]
    out = tokenize_feedback(tokenizer, examples)
    assert [(t.label, t.weight) for t in out] == [(False, 2.5), (True, 0.5)]


def test_pairs_equal_trl_dpo_tokenization(tiny_model_dir, tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    pairs = [
        PreferencePair(user("How do I bake bread?"), assistant("Mix flour and knead."), assistant("No."), weight=2.0),
        PreferencePair(user("Hi"), assistant("Hello!"), assistant("The weather today is sunny with a breeze.")),
        PreferencePair(user("Please describe the product " * 6), assistant("Yes."), assistant("No.")),
    ]
    rows = {key: [getattr(p, key) for p in pairs] for key in ("prompt", "chosen", "rejected")}
    args = DPOConfig(str(tmp_path), per_device_train_batch_size=2, max_length=MAX_LENGTH, report_to=[], **CPU)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), processing_class=tokenizer)
    trl = trainer.train_dataset

    ours = tokenize_pairs(tokenizer, pairs, max_length=MAX_LENGTH)
    assert len(ours) == len(trl) == 2  # the long prompt is dropped by both
    room = [MAX_LENGTH - len(p) for p in trl["prompt_ids"]]
    assert [t.prompt_ids for t in ours] == trl["prompt_ids"]
    assert [t.chosen_ids for t in ours] == [c[:r] for c, r in zip(trl["chosen_ids"], room)]
    assert [t.rejected_ids for t in ours] == [c[:r] for c, r in zip(trl["rejected_ids"], room)]
    assert [t.weight for t in ours] == [2.0, 1.0]


def test_pair_prompt_is_the_shorter_common_prefix(tokenizer):
    # " f" + "ox" merges into " fox" in one completion but not in the other
    pair = PreferencePair("The quick brown f", "ox jumps.", "ood is nice.")
    (t,) = tokenize_pairs(tokenizer, [pair])
    eos = "<|im_end|>"
    assert t.prompt_ids + t.chosen_ids == tokenizer(text=pair.prompt + pair.chosen + eos)["input_ids"]
    assert t.prompt_ids + t.rejected_ids == tokenizer(text=pair.prompt + pair.rejected + eos)["input_ids"]


# Truncation policies on hand-made ids: prompt [1..5], completion [11..16]; 11 tokens in all.
P, C = [1, 2, 3, 4, 5], [11, 12, 13, 14, 15, 16]


@pytest.mark.parametrize(
    "policy, max_length, expected",
    [
        ("keep_start", None, (P, [C])),
        ("keep_end", 11, (P, [C])),  # fits: untouched
        ("drop", 11, (P, [C])),
        ("keep_start", 8, (P, [[11, 12, 13]])),  # cut at max_length from the end
        ("keep_start", 5, None),  # prompt alone fills max_length: dropped (TRL)
        ("keep_start", 6, (P, [[11]])),
        ("keep_end", 8, ([4, 5], [C])),  # completion kept, prompt cut from the left
        ("keep_end", 7, ([5], [C])),
        ("keep_end", 4, ([5], [[11, 12, 13]])),  # completion too long: its start + the last prompt token
        ("drop", 10, None),
    ],
)
def test_truncation_policies(policy, max_length, expected):
    assert truncate(P, [C], max_length, policy) == expected


def test_truncation_of_pairs_cuts_together():
    # keep_end: the longer completion decides how much prompt stays
    assert truncate(P, [C, [21, 22]], 8, "keep_end") == ([4, 5], [C, [21, 22]])
    assert truncate(P, [C, [21, 22]], 8, "keep_start") == (P, [[11, 12, 13], [21, 22]])
    assert truncate(P, [C, [21, 22]], 8, "drop") is None


def test_dropped_examples_are_counted_in_a_warning(tokenizer, caplog):
    examples = [FeedbackExample("a " * 30, "b", True), FeedbackExample("a", "b", False)]
    with caplog.at_level(logging.WARNING, logger="ptalign.data.tokenize"):
        out = tokenize_feedback(tokenizer, examples, max_length=10, truncation="drop")
    assert [t.label for t in out] == [False]
    assert "dropped 1 of 2 examples" in caplog.text
    kept = tokenize_feedback(tokenizer, examples, max_length=10, truncation="keep_end")
    assert len(kept) == 2 and all(len(t.prompt_ids) + len(t.completion_ids) <= 10 for t in kept)
    assert kept[0].completion_ids == tokenize_feedback(tokenizer, examples[:1])[0].completion_ids


def test_unknown_truncation_lists_known_policies(tokenizer):
    with pytest.raises(ValueError, match="unknown truncation 'keep_middle'; known: keep_start, keep_end, drop"):
        tokenize_feedback(tokenizer, PLAIN, max_length=10, truncation="keep_middle")
    with pytest.raises(ValueError, match="max_length=1"):
        tokenize_pairs(tokenizer, [], max_length=1)


def test_tokenized_example_defaults():
    assert TokenizedExample([1], [2], True).weight == 1.0


def test_keep_end_with_an_empty_prompt_keeps_max_length_completion_tokens():
    assert truncate([], [C], 4, "keep_end") == ([], [[11, 12, 13, 14]])
