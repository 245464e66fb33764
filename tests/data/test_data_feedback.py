"""Loading, validating, unpairing and saving feedback JSONL; the shipped demo file."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from ptalign.data import (
    DataError,
    FeedbackExample,
    PreferencePair,
    demo_feedback_path,
    load_feedback,
    save_feedback,
    unpair,
)

CHAT_OK = {
    "prompt": [{"role": "user", "content": "How do I boil an egg?"}],
    "completion": [{"role": "assistant", "content": "Simmer it for 8 minutes."}],
    "label": True,
}
PLAIN_OK = {"prompt": "Q: 2+2?\nA:", "completion": " 4", "label": False}
PAIR_OK = {"prompt": "Q: 2+2?\nA:", "chosen": " 4", "rejected": " 5"}


def write(tmp_path, lines: list) -> str:
    path = tmp_path / "feedback.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return str(path)


def test_loads_unpaired_chat_with_sources_and_weights(tmp_path):
    path = write(tmp_path, [CHAT_OK, "", {**CHAT_OK, "label": False, "weight": 2}])
    examples = load_feedback(path)
    assert examples == [
        FeedbackExample(CHAT_OK["prompt"], CHAT_OK["completion"], True, 1.0, f"{path}:1"),
        FeedbackExample(CHAT_OK["prompt"], CHAT_OK["completion"], False, 2.0, f"{path}:3"),
    ]
    assert examples[0].is_conversational and isinstance(examples[1].weight, float)


def test_loads_paired_plain_text_and_ignores_extra_keys(tmp_path):
    path = write(tmp_path, [{**PAIR_OK, "id": 7}, {**PAIR_OK, "weight": 0.5}])
    assert load_feedback(path) == [
        PreferencePair(PAIR_OK["prompt"], " 4", " 5", 1.0, f"{path}:1"),
        PreferencePair(PAIR_OK["prompt"], " 4", " 5", 0.5, f"{path}:2"),
    ]


BAD_LINES = {
    "invalid JSON": ('{"prompt": "x", "completion": ', "invalid JSON"),
    "not an object": ('["prompt", "completion"]', "line is a list; expected a JSON object"),
    "neither kind": ({"prompt": "x", "answer": "y"}, "expected {'prompt', 'completion', 'label'} (unpaired)"),
    "both kinds": ({**PLAIN_OK, "chosen": "y"}, "expected one kind per line"),
    "missing label": ({"prompt": "x", "completion": "y"}, "missing key 'label'"),
    "missing rejected": ({"prompt": "x", "chosen": "y"}, "missing key 'rejected'"),
    "missing prompt": ({"completion": "y", "label": True}, "missing key 'prompt'"),
    "prompt wrong type": ({**PLAIN_OK, "prompt": 3}, "'prompt' is an integer; expected a string or a list of chat"),
    "label as int": ({**PLAIN_OK, "label": 1}, "'label' is 1 (an integer); expected a JSON boolean, true or false"),
    "label as string": ({**PLAIN_OK, "label": "true"}, "expected a JSON boolean"),
    "empty completion": ({**PLAIN_OK, "completion": "  "}, "'completion' is empty"),
    "empty chosen": ({**PAIR_OK, "chosen": ""}, "'chosen' is empty"),
    "message without role": ({**CHAT_OK, "prompt": [{"content": "hi"}]}, "prompt[0] has no 'role'"),
    "message without content": ({**CHAT_OK, "completion": [{"role": "assistant"}]}, "completion[0] has no 'content'"),
    "message not an object": ({**CHAT_OK, "prompt": ["hi"]}, "prompt[0] is a string; expected a message object"),
    "content not a string": ({**CHAT_OK, "prompt": [{"role": "user", "content": 1}]}, "expected a string"),
    "empty prompt list": ({**CHAT_OK, "prompt": []}, "'prompt' is an empty list"),
    "prompt is only an assistant turn": (
        {**CHAT_OK, "prompt": [{"role": "assistant", "content": "hi"}]},
        "'prompt' ends with an assistant turn that follows no user turn",
    ),
    "prompt ends with an empty prefill": (
        {**CHAT_OK, "prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]},
        "'prompt' ends with an empty assistant turn",
    ),
    "completion from user": (
        {**CHAT_OK, "completion": [{"role": "user", "content": "hi"}]},
        "expected exactly one message with role 'assistant'",
    ),
    "empty assistant message": (
        {**CHAT_OK, "completion": [{"role": "assistant", "content": ""}]},
        "empty assistant message",
    ),
    "text and messages in one line": ({**CHAT_OK, "completion": "hi"}, "mixes plain text and chat messages"),
    "weight zero": ({**PLAIN_OK, "weight": 0}, "'weight' is 0; expected a finite number > 0"),
    "weight string": ({**PLAIN_OK, "weight": "2"}, "'weight' is a string; expected a number > 0"),
    "weight boolean": ({**PLAIN_OK, "weight": True}, "'weight' is a boolean"),
    "paired after unpaired": (PAIR_OK, "paired line in a file whose line 1 is unpaired; expected one kind per file"),
    "chat after plain text": (CHAT_OK, "chat messages in a file whose line 1 is plain text"),
}


@pytest.mark.parametrize("bad, expected", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_errors_name_file_and_line(tmp_path, bad, expected):
    path = write(tmp_path, [PLAIN_OK, "   ", bad, PLAIN_OK])  # line 2 is blank, line 3 is bad
    with pytest.raises(DataError) as err:
        load_feedback(path)
    message = str(err.value)
    assert message.startswith(f"{path}:3: ")
    assert expected in message
    assert isinstance(err.value, ValueError)


def test_unpaired_after_paired_is_an_error(tmp_path):
    path = write(tmp_path, [PAIR_OK, PAIR_OK, PLAIN_OK])
    with pytest.raises(DataError, match=r":3: unpaired line in a file whose line 1 is paired"):
        load_feedback(path)


def test_bad_utf8_names_the_line(tmp_path):
    path = tmp_path / "feedback.jsonl"
    path.write_bytes(json.dumps(PLAIN_OK).encode() + b"\n\n" + b'{"prompt": "\xff"}\n')
    with pytest.raises(DataError, match=r"feedback.jsonl:3: not valid UTF-8"):
        load_feedback(path)


def test_empty_file_is_an_error(tmp_path):
    path = write(tmp_path, ["", "  "])
    with pytest.raises(DataError, match=r"feedback.jsonl:1: empty file; expected JSONL lines"):
        load_feedback(path)


def test_unpair_interleaves_and_carries_weights():
    pairs = [PreferencePair("p0", "c0", "r0", 2.0, "f:1"), PreferencePair("p1", "c1", "r1", 1.0, "f:2")]
    assert unpair(pairs) == [
        FeedbackExample("p0", "c0", True, 2.0, "f:1"),
        FeedbackExample("p0", "r0", False, 2.0, "f:1"),
        FeedbackExample("p1", "c1", True, 1.0, "f:2"),
        FeedbackExample("p1", "r1", False, 1.0, "f:2"),
    ]


@pytest.mark.parametrize(
    "records",
    [
        [FeedbackExample(CHAT_OK["prompt"], CHAT_OK["completion"], True)],
        [FeedbackExample(CHAT_OK["prompt"] + [{"role": "assistant", "content": "Boil"}], CHAT_OK["completion"], True)],
        [FeedbackExample("a", "b ünïcode", False, 3.0), FeedbackExample("c", "d", True)],
        [PreferencePair("p", "c", "r", 0.25)],
    ],
    ids=["chat", "chat-prefilled", "plain", "pairs"],
)
def test_save_then_load_round_trips(tmp_path, records):
    path = tmp_path / "out" / "saved.jsonl"
    save_feedback(records, path)
    loaded = load_feedback(path)
    for item in loaded:
        item.source = ""
    assert loaded == records
    assert [p.name for p in path.parent.iterdir()] == ["saved.jsonl"]  # no temp file left behind
    written = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r.get("weight", 1.0) for r in written] == [r.weight for r in records]
    assert all("weight" in w for w, r in zip(written, records) if r.weight != 1.0)
    assert all("weight" not in w and "source" not in w for w, r in zip(written, records) if r.weight == 1.0)


def test_save_replaces_an_existing_file_and_refuses_bad_input(tmp_path):
    path = tmp_path / "saved.jsonl"
    path.write_text("old contents\n")
    save_feedback([FeedbackExample("a", "b", True)], path)
    assert json.loads(path.read_text()) == {"prompt": "a", "completion": "b", "label": True}
    with pytest.raises(ValueError, match="nothing to save"):
        save_feedback([], path)
    with pytest.raises(ValueError, match="one kind per file"):
        save_feedback([FeedbackExample("a", "b", True), PreferencePair("a", "b", "c")], path)
    assert json.loads(path.read_text())["prompt"] == "a"  # untouched by the failed saves


def test_demo_file_loads_balanced_and_shuffled():
    examples = load_feedback(demo_feedback_path())
    assert len(examples) == 64
    assert Counter(e.label for e in examples) == {True: 32, False: 32}
    assert all(isinstance(e, FeedbackExample) and e.is_conversational for e in examples)
    prompts = Counter(e.prompt[-1]["content"] for e in examples)
    assert set(prompts.values()) == {2}  # every prompt once with a good and once with a bad answer
    neighbours = [a.prompt == b.prompt for a, b in zip(examples, examples[1:])]
    assert not any(neighbours)  # in-order batches never rotate a completion onto its own prompt (KL pairs)
