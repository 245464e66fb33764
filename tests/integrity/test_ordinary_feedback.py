"""feedback.ordinary: everyday instructions answered by the model, refusals of them as losses."""

from __future__ import annotations

import json

import pytest

from ptalign.integrity import datasets as D
from ptalign.integrity.recipes import REFUSALS, FeedbackArgs, build_alignment_feedback, retain_examples
from ptalign.testing import check_own_answer_feedback


def _base(shared_data) -> dict:
    return dict(refusals=4, helpful=5, harmful_compliance=2, benign_refusals=3, xstest_contrast=12, data_root=str(shared_data))


def test_ordinary_answers_are_gains_and_refusals_losses(shared_data):
    key = lambda e: (e.prompt[0]["content"], e.completion[0]["content"], e.label, e.source)
    asked = []

    def sample(prompts):  # complies with the harmful requests; refuses every other ordinary one
        asked.append([p[0]["content"] for p in prompts])
        if len(asked) == 1:
            return ["Sure, here is how."] * len(prompts)
        return ["I'm sorry, I can't." if i % 2 else f"Here you go: {i}." for i in range(len(prompts))]

    refuses = lambda text: "sorry" in text.lower()
    without = build_alignment_feedback(FeedbackArgs(**_base(shared_data)), lambda ps: ["Sure, here is how."] * len(ps), refuses)
    fb = build_alignment_feedback(FeedbackArgs(**_base(shared_data), ordinary=20), sample, refuses)
    pool = {r.prompt.strip() for r in D.load_harmless_instructions()}
    assert len(asked) == 2 and len(set(asked[1])) == 20 and set(asked[1]) <= pool
    assert fb.counts["ordinary_excluded"] == 0
    gpt4 = {e.completion[0]["content"] for e in fb.unpaired if e.source == "xstest_contrast" and e.label}
    check_own_answer_feedback(fb, without, asked[1], "ordinary", "Here you go", "I'm sorry, I can't.", set(REFUSALS) | gpt4)
    gains = [e for e in fb.unpaired if e.source == "ordinary"]
    assert set(map(key, gains)) <= set(map(key, retain_examples(fb.unpaired, "helpful", fb.pairs)))
    assert "ordinary" not in build_alignment_feedback(FeedbackArgs(**_base(shared_data), ordinary=20), None, refuses).counts


def test_ordinary_exclude_keeps_a_held_out_set_out_of_the_draw(shared_data, tmp_path):
    pool = list(dict.fromkeys(r.prompt.strip() for r in D.load_harmless_instructions()))
    held = pool[:7]
    exclude = tmp_path / "sample.jsonl"
    exclude.write_text("".join(json.dumps({"set": "benign", "prompt": p}) + "\n" for p in held[:5])
                       + json.dumps({"prompt": [{"role": "user", "content": held[5]}]}) + "\n\n"
                       + json.dumps({"set": "benign", "prompt": f"  {held[6]}\n"}) + "\n"
                       + json.dumps({"set": "harmful", "prompt": "In no pool"}) + "\n")
    assert D.jsonl_prompts(exclude) == held + ["In no pool"]
    asked = []

    def sample(prompts):
        asked.append([p[0]["content"] for p in prompts])
        return ["Here you go."] * len(prompts)

    args = FeedbackArgs(refusals=0, helpful=0, harmful_compliance=0, benign_refusals=0, data_root=str(shared_data),
                        ordinary=len(pool), ordinary_exclude=str(exclude))
    fb = build_alignment_feedback(args, sample, lambda text: False)
    assert sorted(asked[-1]) == sorted(pool[7:])  # everything but the held-out prompts, each once
    assert fb.counts["ordinary"] == len(pool) - 7 and fb.counts["ordinary_excluded"] == 7
    # the same seed draws the same prompts; another seed others
    first = lambda seed, **kw: (build_alignment_feedback(FeedbackArgs(**{**_base(shared_data), "ordinary": 5, "seed": seed, **kw}), sample,
                                                        lambda text: False), asked[-1])[1]
    assert first(0) == first(0) != first(1)


@pytest.mark.parametrize("text, message", [
    ('{"prompt": "fine"}\n{"set": "benign"}\n', r"bad.jsonl:2: expected a 'prompt'"),
    ('{"prompt": "fine"}\n{oops\n', r"bad.jsonl:2: invalid JSON"),
    ('{"prompt": "fine"}\n\n{"prompt": 3}\n', r"bad.jsonl:3: expected a 'prompt'"),
])
def test_a_bad_exclusion_file_names_file_and_line(tmp_path, text, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text)
    with pytest.raises(D.DataError, match=message):
        D.jsonl_prompts(bad)


def test_ordinary_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="feedback.ordinary_exclude: no file at .*missing.jsonl"):
        FeedbackArgs(ordinary=5, ordinary_exclude=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="feedback.ordinary must be >= 0"):
        FeedbackArgs(ordinary=-1)
