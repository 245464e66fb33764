"""Alignment on one half of AdvBench and HarmBench, evaluation on the other: the split, the
feedback it makes, and the guards that keep an aligned model off the prompts it trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptalign.config import ConfigError
from ptalign.integrity import datasets as D
from ptalign.integrity.judges import KeywordJudge, refusal_rate
from ptalign.integrity.pipeline import build_integrity_config, evaluate_folder, run_experiment
from ptalign.integrity.recipes import (
    EVAL_SPLIT_MARK, REFUSALS, AlignArgs, AttackArgs, FeedbackArgs, align, attack, benchmark_alignment_prompts,
    build_alignment_feedback, required_eval_split, retain_examples, xstest_contrast_completions,
)
from ptalign.integrity.evaluate import EvalArgs, evaluate_model

ROOT = Path(__file__).resolve().parents[2]


def test_prompt_halves_are_fixed_by_the_text_alone():
    prompts = [D.PromptRecord(prompt=f"Write a tutorial on topic {i}") for i in range(400)]
    align_half, eval_half = D.split_prompts(prompts, "align"), D.split_prompts(prompts, "eval")
    assert len(align_half) + len(eval_half) == 400 and 160 < len(eval_half) < 240
    assert not {r.prompt for r in align_half} & {r.prompt for r in eval_half}
    # neither order nor a subset changes which half a prompt is in; spacing does not either
    assert D.split_prompts(prompts[::-1][:50], "eval") == [r for r in prompts[::-1][:50] if r in eval_half]
    assert D.prompt_half("Write  a tutorial on topic 3\n") == D.prompt_half("Write a tutorial on topic 3")
    assert D.split_prompts(prompts, "all") == prompts
    with pytest.raises(ValueError, match="prompt split must be one of all, align, eval"):
        D.split_prompts(prompts, "train")


def test_the_shipped_halves_of_advbench_and_harmbench(shared_data):
    adv, hb = D.load_advbench(data_root=shared_data), D.load_harmbench(data_root=shared_data)
    # measured once on the shared files; the split must not drift, or earlier figures would not reproduce
    assert (len(D.split_prompts(adv, "align")), len(D.split_prompts(adv, "eval"))) == (265, 255)
    assert (len(D.split_prompts(hb, "align")), len(D.split_prompts(hb, "eval"))) == (44, 36)
    assert len(benchmark_alignment_prompts(str(shared_data))) == 309


def test_every_refusal_template_is_a_refusal_to_the_keyword_judge(shared_data):
    judge = KeywordJudge(data_root=shared_data)
    assert all(judge.keywords.matches(text) for text in REFUSALS)


def test_benchmark_feedback_trains_on_the_alignment_halves_only(shared_data):
    args = FeedbackArgs(refusals=2, helpful=1, harmful_compliance=0, benign_refusals=0, benchmark_prompts=12,
                        data_root=str(shared_data))
    sampled = []

    def sample(prompts):
        sampled.extend(p[0]["content"] for p in prompts)
        return ["I'm sorry, no." if i % 3 == 0 else f"Sure, step {i}" for i in range(len(prompts))]

    fb = build_alignment_feedback(args, sample, lambda text: "sorry" in text.lower())
    bench = [e for e in fb.unpaired if e.source.startswith("benchmark")]
    prompts = {e.prompt[0]["content"] for e in bench}
    assert len(prompts) == 12 and fb.counts["benchmark_refusal"] == 12
    assert all(D.prompt_half(p) == "align" for p in prompts)
    gains = [e for e in bench if e.source == "benchmark_refusal"]
    assert all(e.label and e.completion[0]["content"] in REFUSALS for e in gains)
    targets = [e for e in bench if e.source == "benchmark_target"]
    adv_targets = {r.prompt: r.target for r in D.load_advbench(data_root=shared_data)}
    assert targets and all(not e.label and e.completion[0]["content"] == adv_targets[e.prompt[0]["content"]].strip()
                           for e in targets)
    # the model's own answers were sampled for the benchmark prompts too; compliant ones are losses paired with the refusal
    assert prompts <= set(sampled) and len(sampled) == 14
    refusal_of = {e.prompt[0]["content"]: e.completion for e in gains}
    on_policy = [p for p in fb.pairs if p.source == "on_policy" and p.prompt[0]["content"] in refusal_of]
    assert on_policy and all(p.chosen == refusal_of[p.prompt[0]["content"]] for p in on_policy)
    assert fb.counts["on_policy"] == sum(1 for i in range(14) if i % 3)


def test_refusal_filter_keeps_only_refusals_that_refuse(shared_data):
    judge = KeywordJudge(data_root=shared_data)
    plain = build_alignment_feedback(FeedbackArgs(refusals=200, helpful=0, harmful_compliance=0, benign_refusals=0,
                                                  data_root=str(shared_data)), None, judge.keywords.matches)
    kept = build_alignment_feedback(FeedbackArgs(refusals=200, helpful=0, harmful_compliance=0, benign_refusals=0,
                                                 refusal_filter=True, data_root=str(shared_data)), None, judge.keywords.matches)
    refuses = lambda fb: [judge.keywords.matches(e.completion[0]["content"]) for e in fb.unpaired]  # noqa: E731
    assert all(refuses(kept)) and len(kept.unpaired) == 200
    assert 0.1 < 1 - sum(refuses(plain)) / 200 < 0.35  # about 20% of the unfiltered "refusals" answer the request


def test_xstest_contrast_feedback_comes_from_the_alignment_half_with_gpt4s_right_answers(shared_data):
    completions = {r.prompt: r for r in D.load_xstest_completions(data_root=shared_data, model="gpt4")}
    pool = xstest_contrast_completions(str(shared_data))
    # measured once on the shared files: 107 safe + 95 unsafe prompts in the alignment half, of which GPT-4
    # fully complied with 102 safe ones and fully refused 92 unsafe ones (human labels)
    assert (sum(r.prompt_label == "safe" for r in pool), sum(r.prompt_label == "unsafe" for r in pool)) == (102, 92)
    args = FeedbackArgs(refusals=0, helpful=0, harmful_compliance=0, benign_refusals=0, xstest_contrast=40,
                        data_root=str(shared_data))
    fb = build_alignment_feedback(args, None, lambda text: False)
    assert fb.counts["xstest_safe"] + fb.counts["xstest_unsafe"] == 40 and fb.counts["xstest_safe"] > 5
    assert all(e.source == "xstest_contrast" and D.prompt_half(e.prompt[0]["content"]) == "align" for e in fb.unpaired)
    for e in fb.unpaired:
        prompt, text = e.prompt[0]["content"], e.completion[0]["content"]
        if e.label:  # a gain is GPT-4's own answer (cut at max_response_chars), the one its human label calls right
            record = completions[prompt]
            assert record.completion[:args.max_response_chars] == text
            assert record.human_label == ("1_full_compliance" if record.prompt_label == "safe" else "2_full_refusal")
        else:  # a loss is a refusal of a safe prompt, paired against the compliant answer
            assert text in REFUSALS and any(p.prompt[0]["content"] == prompt and p.rejected == e.completion for p in fb.pairs)
    assert len(fb.pairs) == fb.counts["xstest_safe"] == sum(not e.label for e in fb.unpaired)
    assert args.needs_eval_split and not FeedbackArgs().needs_eval_split
    with pytest.raises(ValueError, match="feedback.xstest_contrast must be >= 0"):
        FeedbackArgs(xstest_contrast=-1)


def test_benchmark_feedback_needs_the_evaluation_halves(tmp_path):
    with pytest.raises(ConfigError, match="add eval.split=eval"):
        build_integrity_config({}, ["feedback.benchmark_prompts=10"])
    with pytest.raises(ConfigError, match="add eval.split=eval"):
        build_integrity_config({}, ["feedback.xstest_contrast=10"])
    cfg = build_integrity_config({}, ["feedback.benchmark_prompts=10", "eval.split=eval"])
    assert cfg.eval.split == "eval"
    with pytest.raises(ValueError, match="eval.split must be one of all, align, eval, got 'train'"):
        EvalArgs(split="train")
    with pytest.raises(ConfigError, match="add eval.split=eval"):  # a benchmark run is never scored on what it trained on
        build_integrity_config({}, ["feedback.xstest_contrast=10", "eval.split=align"])
    # a single step with a run's config is not a run: it may ask for the halves it trained on, a run still may not
    step = build_integrity_config({}, ["feedback.xstest_contrast=10", "eval.split=align"], run=False)
    assert step.eval.split == "align"
    with pytest.raises(ConfigError, match="add eval.split=eval"):
        run_experiment(step, tmp_path / "never-written")
    assert not (tmp_path / "never-written").exists()


def test_eval_with_the_halves_config_may_measure_the_alignment_halves(tiny_model_dir, tmp_path, shared_data, monkeypatch):
    from typer.testing import CliRunner

    from ptalign.cli import app

    monkeypatch.setenv("PTALIGN_SHARED_DATA", str(shared_data))
    config = str(ROOT / "configs" / "integrity_benchmark_cpu_halves.yaml")
    small = ["eval.split=align", "eval.advbench=2", "eval.harmbench=1", "eval.xstest=2", "eval.xstest_unsafe=0",
             "eval.sst2=0", "eval.utility=0", "eval.max_new_tokens=2"]
    out = tmp_path / "align.json"
    result = CliRunner().invoke(app, ["integrity", "eval", str(tiny_model_dir), "--config", config, "--out", str(out),
                                      "--cache-dir", str(tmp_path / "cache"), *small])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["eval_args"]["split"] == "align" and figures["eval_args"]["max_new_tokens"] == 2
    shown = [s["prompt"] for name in ("advbench", "harmbench", "xstest_safe") for s in figures["samples"][name]]
    assert len(shown) == 5 and all(D.prompt_half(p) == "align" for p in shown)
    # the same config and split as a run is refused before anything is written
    result = CliRunner().invoke(app, ["integrity", "run", config, "--out", str(tmp_path / "run"), "eval.split=align"])
    assert result.exit_code != 0 and "add eval.split=eval" in result.output
    assert not (tmp_path / "run").exists()


def test_evaluation_halves_and_the_xstest_contrast_figure(tiny_model_dir, shared_data):
    from ptalign.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir))
    args = EvalArgs(advbench=6, harmbench=4, xstest=2, xstest_unsafe=3, sst2=0, utility=0, max_new_tokens=3,
                    split="eval", data_root=str(shared_data))
    result = evaluate_model(model, tokenizer, args, judge=KeywordJudge(data_root=shared_data), progress=False)
    assert 0 <= result["refusal_xstest_unsafe"] <= 100 and "over_refusal" in result
    assert result["over_refusal_xstest_strmatch"] in (0.0, 50.0, 100.0)  # of the 2 safe prompts
    for key, total in (("over_refusal_by_type", "over_refusal"), ("refusal_xstest_unsafe_by_type", "refusal_xstest_unsafe"),
                       ("hs_harmbench_by_category", "hs_harmbench")):
        assert result[key] and min(result[key].values()) <= result[total] <= max(result[key].values())
    assert set(result["hs_harmbench_by_category"]) <= {p.category for p in D.load_harmbench(data_root=shared_data)}
    shown = [s["prompt"] for name in ("advbench", "harmbench") for s in result["samples"][name]]
    assert len(shown) == 6 and all(D.prompt_half(p) == "eval" for p in shown)
    unsafe = {p.prompt for p in D.load_xstest(data_root=shared_data) if p.label == "unsafe"}
    assert all(s["prompt"] in unsafe for s in result["samples"]["xstest_unsafe"])
    xstest = [s["prompt"] for name in ("xstest_safe", "xstest_unsafe") for s in result["samples"][name]]
    assert len(xstest) == 5 and all(D.prompt_half(p) == "eval" for p in xstest)


def test_an_aligned_model_carries_its_split_through_the_attack(tiny_model_dir, tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("PTALIGN_SHARED_DATA", str(shared_data))
    feedback_args = FeedbackArgs(refusals=2, helpful=2, harmful_compliance=2, benign_refusals=0, benchmark_prompts=4,
                                 data_root=str(shared_data))
    feedback = build_alignment_feedback(feedback_args, None, lambda text: False)
    cache = str(tmp_path / "cache")
    aligned = align(str(tiny_model_dir), tmp_path / "align", AlignArgs(epochs=1, batch_size=4, lora_r=4, max_length=96),
                    feedback_args, cache_dir=cache, feedback_data=feedback)
    assert required_eval_split(str(aligned)) == "eval"
    assert "4 prompts" in json.loads((aligned / EVAL_SPLIT_MARK).read_text())["why"]
    attacked = attack(str(aligned), tmp_path / "attack", AttackArgs(n=4, epochs=1, batch_size=4, lora_r=4, max_length=96,
                                                                   data_root=str(shared_data)), cache_dir=cache)
    assert required_eval_split(str(attacked)) == "eval"
    small = dict(advbench=2, harmbench=1, xstest=1, sst2=0, utility=0, max_new_tokens=2, data_root=str(shared_data))
    with pytest.raises(ValueError, match="add eval.split=eval"):
        evaluate_folder(str(attacked), EvalArgs(**small), judge=KeywordJudge(data_root=shared_data), cache_dir=cache)
    assert "hs" in evaluate_folder(str(attacked), EvalArgs(**small, split="eval"), judge=KeywordJudge(data_root=shared_data),
                                   cache_dir=cache)
    # the halves it was trained on, asked for by name: every prompt from them
    trained = evaluate_folder(str(aligned), EvalArgs(**small, xstest_unsafe=1, split="align"),
                              judge=KeywordJudge(data_root=shared_data), cache_dir=cache)
    shown = [s["prompt"] for name in ("advbench", "harmbench", "xstest_safe", "xstest_unsafe") for s in trained["samples"][name]]
    assert len(shown) == 5 and all(D.prompt_half(p) == "align" for p in shown)
    assert trained["eval_args"]["split"] == "align"
    assert required_eval_split(str(tiny_model_dir)) is None


def test_on_policy_samples_are_cached_per_model_prompts_and_settings(tiny_model_dir, tmp_path, shared_data, monkeypatch):
    import ptalign.models as models
    from rich.console import Console

    from ptalign.integrity.recipes import sample_feedback

    calls = []
    real = models.generate

    def counting(*args, **kwargs):
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "generate", counting)
    args = FeedbackArgs(refusals=3, helpful=1, harmful_compliance=0, benign_refusals=0, on_policy_tokens=4,
                        data_root=str(shared_data))
    cache = str(tmp_path / "cache")
    first = sample_feedback(str(tiny_model_dir), args, Console(quiet=True), cache)
    again = sample_feedback(str(tiny_model_dir), args, Console(quiet=True), cache)
    assert calls == [3] and [e.completion for e in again.unpaired] == [e.completion for e in first.unpaired]
    assert len(list((tmp_path / "cache" / "samples").glob("*.json"))) == 1
    # another seed samples again, and is stored beside the first
    sample_feedback(str(tiny_model_dir), FeedbackArgs(**{**args.__dict__, "seed": 1}), Console(quiet=True), cache)
    assert calls == [3, 3] and len(list((tmp_path / "cache" / "samples").glob("*.json"))) == 2


def test_rates_by_category_are_each_categorys_own():
    from ptalign.integrity.evaluate import rate_by_category
    from ptalign.integrity.judges import Verdict

    records = [D.PromptRecord(prompt=f"p{i}", category=c, label="safe", source="xstest")
               for i, c in enumerate(["homonyms", "homonyms", "homonyms", "safe_contexts", ""])]
    verdicts = [Verdict(harmful=False, refusal=r, score=0.0) for r in (True, False, False, True, False)]
    rates = rate_by_category(records, verdicts, refusal_rate)
    assert rates == {"(none)": 0.0, "homonyms": pytest.approx(100 / 3), "safe_contexts": 100.0}
    with pytest.raises(ValueError):
        rate_by_category(records[:2], verdicts, refusal_rate)


def test_the_models_own_over_refusals_become_losses_paired_with_the_right_answer(shared_data):
    args = FeedbackArgs(refusals=0, helpful=3, harmful_compliance=0, benign_refusals=0, xstest_contrast=10,
                        on_policy_benign=8, data_root=str(shared_data))
    asked = []

    def sample(prompts):  # refuses every other prompt
        asked.extend(p[0]["content"] for p in prompts)
        return ["I'm sorry, I can't." if i % 2 == 0 else "Sure, here it is." for i in range(len(prompts))]

    fb = build_alignment_feedback(args, sample, lambda text: "sorry" in text.lower())
    right = {e.prompt[0]["content"]: e.completion for e in fb.unpaired
             if e.label and e.source in ("helpful", "xstest_contrast")}
    safe = [e.prompt[0]["content"] for e in fb.unpaired if e.source == "xstest_contrast" and not e.label]
    assert len(asked) == 8 and set(asked) <= set(right)
    assert sorted(asked[:len(safe)]) == sorted(safe)  # the XSTest safe prompts are asked first, then Alpaca's
    losses = [e for e in fb.unpaired if e.source == "on_policy_over_refusal"]
    assert fb.counts["on_policy_over_refusal"] == len(losses) == 4
    assert sorted(e.prompt[0]["content"] for e in losses) == sorted(asked[0::2])
    assert all(not e.label and e.completion[0]["content"] == "I'm sorry, I can't." for e in losses)
    pairs = [p for p in fb.pairs if p.source == "on_policy_over_refusal"]
    assert len(pairs) == 4 and all(p.chosen == right[p.prompt[0]["content"]] for p in pairs)
    assert "on_policy_over_refusal" not in build_alignment_feedback(args, None, lambda text: False).counts
    with pytest.raises(ValueError, match="feedback.on_policy_benign must be >= 0"):
        FeedbackArgs(on_policy_benign=-1)


def test_the_benign_pool_adds_answered_benign_requests_the_helpful_set_did_not_draw(shared_data):
    base = dict(refusals=4, helpful=5, harmful_compliance=2, benign_refusals=3, xstest_contrast=6,
                data_root=str(shared_data))
    key = lambda e: (e.prompt[0]["content"], e.completion[0]["content"], e.label, e.source)
    without = build_alignment_feedback(FeedbackArgs(**base), None, lambda text: False)
    asked = []

    def sample(prompts):  # refuses every prompt it is asked: the 4 harmful requests first, then the benign ones
        asked.append([p[0]["content"] for p in prompts])
        return ["I'm sorry, I can't."] * len(prompts)

    with_pool = build_alignment_feedback(FeedbackArgs(**base, benign_pool=40, on_policy_benign=100), sample,
                                         lambda text: "sorry" in text.lower())
    pool = [e for e in with_pool.unpaired if e.source == "benign_pool"]
    assert with_pool.counts["benign_pool"] == len(pool) == 40 and all(e.label for e in pool)
    # the rest of the feedback is the same draw as without the pool
    assert {key(e) for e in without.unpaired} == {key(e) for e in with_pool.unpaired
                                                 if e.source not in ("benign_pool", "on_policy_over_refusal")}
    drawn = {e.prompt[0]["content"] for e in with_pool.unpaired if e.source in ("helpful", "benign_refusal")}
    assert not drawn & {e.prompt[0]["content"] for e in pool}
    sources = {(r.prompt, r.response[:400]) for r in D.load_alpaca(data_root=str(shared_data)) + D.load_dolly(data_root=str(shared_data))}
    assert all((e.prompt[0]["content"], e.completion[0]["content"][:400]) in sources for e in pool)
    assert any(e.prompt[0]["content"] in {r.prompt for r in D.load_dolly(data_root=str(shared_data))} for e in pool)
    # asked after the contrast and helpful prompts; each refusal is a loss paired with the dataset's answer
    safe, (harmful, benign) = with_pool.counts["xstest_safe"], asked
    assert len(harmful) == 4 and len(benign) == safe + 5 + 40
    assert set(benign[safe + 5:]) == {e.prompt[0]["content"] for e in pool}
    answer = {e.prompt[0]["content"]: e.completion for e in pool}
    pool_pairs = [p for p in with_pool.pairs if p.source == "on_policy_over_refusal" and p.prompt[0]["content"] in answer]
    assert len(pool_pairs) == 40 and all(p.chosen == answer[p.prompt[0]["content"]] for p in pool_pairs)
    assert set(map(key, pool)) <= set(map(key, retain_examples(with_pool.unpaired, "helpful")))
    with pytest.raises(ValueError, match="feedback.benign_pool must be >= 0"):
        FeedbackArgs(benign_pool=-1)
