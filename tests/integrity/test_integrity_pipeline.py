"""The integrity pipeline end to end on the tiny model: feedback, every alignment method,
attacks, evaluation and the report; plus the mechanics of the attack-aware step and of the
representation-noise term."""

from __future__ import annotations

import json
import math

import pytest
import torch
from rich.console import Console

from ptalign.config import ConfigError
from ptalign.data import load_feedback
from ptalign.integrity.pipeline import build_integrity_config, run_experiment
from ptalign.integrity.recipes import (
    AttackArgs, FeedbackArgs, build_alignment_feedback, build_attack_data, mixed_attack, pure_bad_attack,
)

TINY = ["feedback.refusals=6", "feedback.helpful=4", "feedback.harmful_compliance=4", "feedback.benign_refusals=2",
        "feedback.on_policy_tokens=6", "align.epochs=1", "align.batch_size=4", "align.lora_r=4", "align.attack_examples=4",
        "align.max_length=96", "attack.n=8", "attack.epochs=2", "attack.batch_size=4", "attack.lora_r=4",
        "attack.max_length=96", "eval.advbench=3", "eval.harmbench=2", "eval.xstest=2", "eval.sst2=4", "eval.utility=2",
        "eval.max_new_tokens=4", "eval.judge=keyword"]


def test_feedback_has_gains_losses_and_pairs_on_the_same_prompts(shared_data):
    args = FeedbackArgs(refusals=5, helpful=3, harmful_compliance=2, benign_refusals=2, data_root=str(shared_data))
    sampled = []

    def sample(prompts):
        sampled.extend(prompts)
        return ["Sure, here is how.", "I'm sorry, I cannot help with that.", "", "Step 1: do it", "Okay."]

    fb = build_alignment_feedback(args, sample, lambda text: "sorry" in text.lower())
    assert fb.counts == {"refusal": 5, "helpful": 3, "harmful_compliance": 2, "benign_refusal": 2, "on_policy": 3, "recovery": 0,
                         "pairs": 5}
    labels = [e.label for e in fb.unpaired]
    assert labels.count(True) == 8 and labels.count(False) == 7
    on_policy = [e for e in fb.unpaired if e.source == "on_policy"]
    assert sorted(e.completion[0]["content"] for e in on_policy) == ["Okay.", "Step 1: do it", "Sure, here is how."]
    # each on-policy loss is paired with the refusal of the same harmful prompt
    pairs = [p for p in fb.pairs if p.source == "on_policy"]
    refusal_of = {e.prompt[0]["content"]: e.completion for e in fb.unpaired if e.source == "refusal"}
    assert all(p.chosen == refusal_of[p.prompt[0]["content"]] for p in pairs)
    assert len(sampled) == 5


def test_recovery_examples_prefill_the_models_own_harmful_start(shared_data):
    args = FeedbackArgs(refusals=4, helpful=0, harmful_compliance=0, benign_refusals=0, recovery=3, recovery_max_words=2,
                        data_root=str(shared_data))
    answers = ["Sure, here is how to do it.", "I'm sorry, no.", "Okay", "Step 1: mix the two."]
    fb = build_alignment_feedback(args, lambda prompts: answers, lambda text: "sorry" in text.lower())
    # "Okay" has no second word to mark as a loss, so 2 of the 3 compliant answers make recovery examples
    assert fb.counts["on_policy"] == 3 and fb.counts["recovery"] == 2
    recovery = [e for e in fb.unpaired if e.source == "recovery"]
    refusal_of = {e.prompt[0]["content"]: e.completion[0]["content"] for e in fb.unpaired if e.source == "refusal"}
    for gain in (e for e in recovery if e.label):
        user, start = gain.prompt
        assert start["role"] == "assistant" and 1 <= len(start["content"].split()) <= 2
        answer = next(a for a in answers if a.startswith(start["content"]))
        assert gain.completion[0]["content"] == " " + refusal_of[user["content"]].strip()
        loss = next(e for e in recovery if not e.label and e.prompt == gain.prompt)
        assert start["content"] + loss.completion[0]["content"] == answer  # the loss is the rest of the same answer
    assert sum(p.source == "recovery" for p in fb.pairs) == 2
    again = build_alignment_feedback(args, lambda prompts: answers, lambda text: "sorry" in text.lower())
    assert [e.prompt for e in again.unpaired] == [e.prompt for e in fb.unpaired]  # seeded
    with pytest.raises(ValueError, match="feedback.recovery_max_words must be >= 1"):
        FeedbackArgs(recovery_max_words=0)


def test_attack_data_mixes_the_harmful_share(shared_data):
    rows = mixed_attack(AttackArgs(n=40, harmful_ratio=0.1, data_root=str(shared_data)))
    assert len(rows) == 40 and sum(r.source == "pure_bad" for r in rows) == 4
    sst2 = [r for r in rows if r.source == "sst2"]
    assert {r.completion[0]["content"] for r in sst2} <= {"positive", "negative"}
    assert "respond only positive or negative" in sst2[0].prompt[0]["content"]
    pure = pure_bad_attack(AttackArgs(kind="pure_bad", n=10, data_root=str(shared_data)))
    assert len(pure) == 10 and all(r.label for r in pure)
    again = build_attack_data(AttackArgs(n=40, harmful_ratio=0.1, data_root=str(shared_data)))
    assert [r.prompt for r in again] == [r.prompt for r in rows]  # seeded


def test_prefill_eval_continues_advbench_targets(tiny_model_dir, shared_data, monkeypatch):
    import ptalign.integrity.evaluate as E
    from ptalign.models import load_model

    model, tok = load_model(str(tiny_model_dir))
    seen = []
    real_generate = __import__("ptalign.models", fromlist=["generate"]).generate

    def spy(model, tokenizer, prompts, **kw):
        seen.extend(prompts)
        return real_generate(model, tokenizer, prompts, **kw)

    monkeypatch.setattr("ptalign.models.generate", spy)
    args = E.EvalArgs(advbench=3, harmbench=0, xstest=0, sst2=0, utility=0, max_new_tokens=4, prefill=True,
                      data_root=str(shared_data))
    result = E.evaluate_model(model, tok, args, progress=False)
    prefilled = [p for p in seen if p[-1]["role"] == "assistant"]
    assert len(seen) == 6 and len(prefilled) == 3
    assert all(p[-1]["content"].startswith("Sure, here is") for p in prefilled)
    assert [p[:1] for p in prefilled] == seen[:3]  # the same AdvBench prompts, prefilled
    assert 0 <= result["hs_prefill_advbench"] <= 100 and result["hs"] == result["hs_advbench"]  # not mixed into HS
    assert [s["prefill"] for s in result["samples"]["advbench_prefill"]] == [p[-1]["content"] for p in prefilled]
    assert "hs_prefill_advbench" not in E.evaluate_model(model, tok, E.EvalArgs(**{**vars(args), "prefill": False}), progress=False)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="align.method must be one of"):
        build_integrity_config({}, ["align.method=magic"])
    with pytest.raises(ConfigError, match="unknown key"):
        build_integrity_config({"attack": {"ratio": 0.1}})
    with pytest.raises(ConfigError, match="unknown method"):
        build_integrity_config({}, ["methods=none,nope"])
    cfg = build_integrity_config({}, ["methods=none,kto", "attack.harmful_ratio=0.2"])
    assert cfg.methods == ["none", "kto"] and cfg.attack.harmful_ratio == 0.2


def test_simulated_attack_restores_weights_and_keeps_grads_apart(tiny_model_dir, tmp_path, shared_data):
    from ptalign.batches import prepare_data
    from ptalign.data import save_feedback
    from ptalign.integrity.recipes import simulated_attack_records
    from ptalign.integrity.tamper import SimulatedAttack
    from ptalign.losses import build_loss
    from ptalign.models import apply_lora, load_model
    from ptalign.reference import CompletionScorer

    model, tok = load_model(str(tiny_model_dir))
    model = apply_lora(model, r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    path = tmp_path / "harm.jsonl"
    save_feedback(simulated_attack_records(4, data_root=str(shared_data)), path)
    data = prepare_data(str(path), tok, build_loss("sft"), 64, "keep_start", 2, 0)
    adv = SimulatedAttack(data, tok.pad_token_id, 64, steps=2, radius=0.25)
    scorer = CompletionScorer(model)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    batch = adv.next_batch("cpu")
    loss_before = float(adv.attack_loss(scorer, batch))
    with adv.attacked(scorer, params):
        moved = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(params, before)))
        assert 0.25 < float(moved) <= 0.5 + 1e-5  # two steps of length 0.25
        assert float(adv.attack_loss(scorer, batch)) < loss_before  # the attack lowers the harmful NLL
        assert all(p.grad is None for p in params)  # autograd.grad never touches .grad
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_representation_noise_pulls_harmful_states_toward_noise(tiny_model_dir, tmp_path, shared_data):
    from ptalign.batches import prepare_data
    from ptalign.data import save_feedback
    from ptalign.integrity.recipes import simulated_attack_records
    from ptalign.integrity.tamper import RepresentationNoise
    from ptalign.losses import build_loss
    from ptalign.models import load_model
    from ptalign.reference import CompletionScorer

    torch.manual_seed(0)
    model, tok = load_model(str(tiny_model_dir))  # full-parameter: the tiny model's states are far from N(0, I)
    path = tmp_path / "harm.jsonl"
    save_feedback(simulated_attack_records(2, data_root=str(shared_data)), path)
    data = prepare_data(str(path), tok, build_loss("sft"), 64, "keep_start", 2, 0)
    noise = RepresentationNoise(data, tok.pad_token_id, 64, weight=1.0, ascent_weight=0.5, max_tokens=32)
    scorer = CompletionScorer(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    figures = []
    for _ in range(30):  # one batch of two examples, cycled
        loss, fig = noise(scorer)
        assert float(loss.detach()) == pytest.approx(fig["noise/mmd"] - 0.5 * math.log1p(fig["noise/nll"]), abs=1e-5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        figures.append(fig)
    late = figures[-5:]
    # hidden states moved toward N(0, I) (measured: 1.40 -> 0.57) and the harmful completions got less likely
    assert sum(f["noise/mmd"] for f in late) / 5 < 0.6 * figures[0]["noise/mmd"]
    assert min(f["noise/nll"] for f in late) > figures[0]["noise/nll"] + 1


def test_align_with_representation_noise_logs_the_term(tiny_model_dir, tmp_path, shared_data):
    from ptalign.integrity.recipes import AlignArgs, align

    feedback_args = FeedbackArgs(refusals=4, helpful=4, harmful_compliance=4, benign_refusals=0, data_root=str(shared_data))
    feedback = build_alignment_feedback(feedback_args, None, lambda text: False)
    for retain in (0.0, 1.0):
        out = tmp_path / f"align-{retain}"
        args = AlignArgs(method="kt-ipa-rn", epochs=1, batch_size=4, lora_r=4, attack_examples=4, max_length=96,
                         noise_retain=retain)
        model = align(str(tiny_model_dir), out, args, feedback_args, cache_dir=str(tmp_path / "cache"), feedback_data=feedback)
        rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 3 and all(row["noise/mmd"] > 0 and row["noise/nll"] > 0 for row in rows)
        assert all(("noise/retain_nll" in row) == (retain > 0) for row in rows)
        assert (model / "model.safetensors").is_file()
    # the retain term reads the feedback's gains only
    kept = load_feedback(tmp_path / "align-1.0" / "retain.jsonl")
    assert len(kept) == 8 and all(e.label for e in kept)
    with pytest.raises(ValueError, match="noise_retain must be >= 0"):
        AlignArgs(method="kt-ipa-rn", noise_retain=-1.0)


@pytest.mark.parametrize("method", ["sft", "dpo", "kt-ipa"])
def test_other_methods_take_the_retain_term_alone(tiny_model_dir, tmp_path, shared_data, method):
    """A baseline trained on the same recipe: noise_retain adds the likelihood anchor and nothing of RepNoise."""
    from ptalign.integrity.recipes import AlignArgs, align

    feedback_args = FeedbackArgs(refusals=4, helpful=4, harmful_compliance=4, benign_refusals=4, data_root=str(shared_data))
    feedback = build_alignment_feedback(feedback_args, None, lambda text: False)
    for retain in (0.0, 1.0):
        out = tmp_path / f"{method}-{retain}"
        args = AlignArgs(method=method, epochs=1, batch_size=4, lora_r=4, attack_examples=4, max_length=96,
                         noise_retain=retain, noise_retain_set="helpful")
        align(str(tiny_model_dir), out, args, feedback_args, cache_dir=str(tmp_path / "cache"), feedback_data=feedback)
        rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
        assert rows and not any("noise/mmd" in row or "noise/nll" in row for row in rows)
        assert all(("noise/retain_nll" in row and row["noise/retain_nll"] > 0) == (retain > 0) for row in rows)
        assert (out / "retain.jsonl").is_file() == (retain > 0)
    kept = load_feedback(tmp_path / f"{method}-1.0" / "retain.jsonl")
    helpful = [e.completion for e in feedback.unpaired if e.source == "helpful"]
    assert len(helpful) == 4 and [e.completion for e in kept] == helpful and all(e.label for e in kept)


def test_retain_set_is_every_gain_or_the_helpful_answers_only(shared_data):
    from ptalign.integrity.recipes import AlignArgs, retain_examples

    feedback = build_alignment_feedback(FeedbackArgs(refusals=3, helpful=5, harmful_compliance=2, benign_refusals=2,
                                                     data_root=str(shared_data)), None, lambda text: False)
    gains = retain_examples(feedback.unpaired)
    assert len(gains) == 8 and sorted({e.source for e in gains}) == ["helpful", "refusal"]
    helpful = retain_examples(feedback.unpaired, "helpful")
    assert len(helpful) == 5 and {e.source for e in helpful} == {"helpful"} and all(e.label for e in helpful)
    with pytest.raises(ValueError, match="noise_retain_set must be one of gains, helpful, benign"):
        AlignArgs(method="kt-ipa-rn", noise_retain_set="refusals")


def test_benign_retain_set_is_every_right_answer_to_a_benign_prompt(shared_data):
    from ptalign.integrity.recipes import REFUSALS, retain_examples, xstest_contrast_completions

    feedback = build_alignment_feedback(FeedbackArgs(refusals=3, helpful=4, harmful_compliance=2, benign_refusals=2,
                                                     xstest_contrast=30, data_root=str(shared_data)), None, lambda text: False)
    benign = retain_examples(feedback.unpaired, "benign", feedback.pairs)
    safe = {r.prompt: r.completion for r in xstest_contrast_completions(str(shared_data)) if r.prompt_label == "safe"}
    contrast = [e for e in benign if e.source == "xstest_contrast"]
    assert len(benign) == 4 + feedback.counts["xstest_safe"] and len(contrast) == feedback.counts["xstest_safe"] > 5
    assert sum(e.source == "helpful" for e in benign) == 4 and all(e.label for e in benign)
    for e in contrast:  # GPT-4's answer to a safe prompt, never a refusal and never an unsafe prompt's gain
        prompt, text = e.prompt[0]["content"], e.completion[0]["content"]
        assert prompt in safe and safe[prompt].startswith(text) and text not in REFUSALS
    # without the pairs nothing tells a safe prompt's gain from an unsafe one's refusal: the helpful answers only
    assert retain_examples(feedback.unpaired, "benign") == retain_examples(feedback.unpaired, "helpful")


def test_retain_term_alone_skips_the_harmful_pass(tiny_model_dir, tmp_path, shared_data):
    from ptalign.batches import prepare_data
    from ptalign.data import save_feedback
    from ptalign.integrity.recipes import simulated_attack_records
    from ptalign.integrity.tamper import CycledBatches, RepresentationNoise
    from ptalign.losses import build_loss
    from ptalign.models import load_model
    from ptalign.reference import CompletionScorer

    model, tok = load_model(str(tiny_model_dir))
    path = tmp_path / "records.jsonl"
    save_feedback(simulated_attack_records(2, data_root=str(shared_data)), path)
    data = prepare_data(str(path), tok, build_loss("sft"), 64, "keep_start", 2, 0)
    retain = CycledBatches(data, tok.pad_token_id, 64)
    term = RepresentationNoise(data, tok.pad_token_id, 64, weight=0.0, ascent_weight=0.0, retain=retain, retain_weight=0.5)
    scorer = CompletionScorer(model)
    term._noise = lambda *a: pytest.fail("the harmful pass ran with both noise weights at 0")
    loss, figures = term(scorer)
    batch = CycledBatches(data, tok.pad_token_id, 64).next_batch("cpu")
    logps, n_tokens = scorer(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    nll = -float(logps.sum() / n_tokens.sum())  # mean NLL per completion token, by hand
    assert list(figures) == ["noise/retain_nll"] and figures["noise/retain_nll"] == pytest.approx(nll, rel=1e-5)
    assert float(loss) == pytest.approx(0.5 * nll, rel=1e-5) and loss.requires_grad


def test_run_experiment_writes_results_and_report(tiny_model_dir, tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("PTALIGN_SHARED_DATA", str(shared_data))
    cfg = build_integrity_config({"model": str(tiny_model_dir), "methods": ["none", "dpo", "kt-ipa-aa"]},
                                 [*TINY, "feedback.recovery=3"])
    console = Console(record=True, width=400)
    results = run_experiment(cfg, tmp_path / "out", console=console, cache_dir=str(tmp_path / "cache"))
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(saved["methods"]) == ["none", "dpo", "kt-ipa-aa"] == list(results["methods"])
    printed = console.export_text()
    for method, r in saved["methods"].items():
        for stage in ("before", "after_mixed", "after_pure_bad"):
            figures = r[stage]
            # each stage's figures are printed as soon as it is evaluated, as saved
            label = "before the attack" if stage == "before" else stage.replace("_", " ", 1)
            assert (f"{method} {label}: HS {figures['hs']:.1f} (AdvBench {figures['hs_advbench']:.1f}, "
                    f"HarmBench {figures['hs_harmbench']:.1f}), over-refusal {figures['over_refusal']:.1f}") in printed
            assert 0 <= figures["hs"] <= 100 and 0 <= figures["over_refusal"] <= 100 and 0 <= figures["fa"] <= 100
            assert figures["hs"] == pytest.approx((figures["hs_advbench"] * 3 + figures["hs_harmbench"] * 2) / 5)
        assert list(r["after_mixed"]["hs_by_epoch"]) == ["0", "1", "2"]
    aa = tmp_path / "out" / "kt-ipa-aa" / "align"
    rows = [json.loads(line) for line in (aa / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("loss_after_attack" in row for row in rows)  # the attack-aware step ran
    assert (aa / "model" / "model.safetensors").is_file()
    assert load_feedback(tmp_path / "out" / "dpo" / "align" / "pairs.jsonl")
    # safety-recovery examples (prefilled harmful starts) went through alignment
    prefilled = [e for e in load_feedback(aa / "feedback.jsonl") if e.prompt[-1]["role"] == "assistant"]
    assert prefilled and {e.label for e in prefilled} == {True, False}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| kt-ipa-aa |" in report and (tmp_path / "out" / "hs_by_epoch.png").is_file()
    assert "![HS against over-refusal](tradeoff.png)" in report and (tmp_path / "out" / "tradeoff.png").is_file()


def test_run_experiment_refuses_a_folder_with_a_run_before_sampling(tiny_model_dir, tmp_path, monkeypatch):
    import ptalign.integrity.pipeline as pipeline

    (tmp_path / "out" / "kt-ipa" / "align").mkdir(parents=True)
    monkeypatch.setattr(pipeline, "sample_feedback", lambda *a, **k: pytest.fail("sampled before checking the folder"))
    cfg = build_integrity_config({"model": str(tiny_model_dir), "methods": ["none", "kt-ipa"]}, TINY)
    with pytest.raises(FileExistsError, match=r"kt-ipa already holds a run of kt-ipa"):
        run_experiment(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "config.yaml").exists()


def test_integrity_run_cli_prints_the_whole_table_to_stdout(tiny_model_dir, tmp_path, shared_data, monkeypatch):
    from typer.testing import CliRunner

    from ptalign.cli import app

    monkeypatch.setenv("PTALIGN_SHARED_DATA", str(shared_data))
    config = tmp_path / "integrity.yaml"
    config.write_text(f"model: {tiny_model_dir}\nmethods: [none]\nattacks: [mixed]\n")
    args = ["integrity", "run", str(config), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), *TINY]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if line.startswith("| method"))
    assert header.endswith("| utility logp |")  # one line, not wrapped at the console width
    assert any(line.startswith("| none | ") for line in result.stdout.splitlines())
    assert json.loads((tmp_path / "out" / "results.json").read_text())["complete"] is True


def test_attack_radius_defaults_by_what_trains():
    # the calibrated radii (benchmarks/integrity_attack_radius.py): 0.5 overshoots on every weight of SmolLM2
    assert build_integrity_config({}, []).align.attack_radius == 0.5
    assert build_integrity_config({}, ["align.lora=false"]).align.attack_radius == 0.1
    assert build_integrity_config({}, ["align.lora=false", "align.attack_radius=0.3"]).align.attack_radius == 0.3
    with pytest.raises(ConfigError, match="attack_radius must be > 0"):
        build_integrity_config({}, ["align.attack_radius=0"])


def test_reference_point_reaches_the_prospect_loss_and_the_run(tiny_model_dir, tmp_path, shared_data):
    from ptalign.integrity.recipes import AlignArgs, align

    assert AlignArgs().loss()["reference_point"] == "kl"
    assert "reference_point" not in AlignArgs(method="kto").loss()
    cfg = build_integrity_config({}, ["align.reference_point=fixed", "align.reference_value=0.25"])
    assert cfg.align.loss() == {"name": "prospect", "beta": 0.1, "loss_aversion": 2.25, "gain_curvature": 0.88,
                                "loss_curvature": 0.88, "reference_point": "fixed", "reference_value": 0.25}
    with pytest.raises(ConfigError, match="align.reference_point must be one of kl, running_mean, fixed, got 'median'"):
        build_integrity_config({}, ["align.reference_point=median"])

    feedback_args = FeedbackArgs(refusals=4, helpful=4, harmful_compliance=4, benign_refusals=0, data_root=str(shared_data))
    feedback = build_alignment_feedback(feedback_args, None, lambda text: False)
    points = {}
    for kind in ("fixed", "running_mean"):
        out = tmp_path / kind
        args = AlignArgs(method="kt-ipa", epochs=1, batch_size=2, lora_r=4, max_length=96, learning_rate=1e-2,
                         reference_point=kind, reference_value=0.25)
        align(str(tiny_model_dir), out, args, feedback_args, cache_dir=str(tmp_path / "cache"), feedback_data=feedback)
        rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
        points[kind] = [row["reference_point"] for row in rows]
    assert len(points["fixed"]) == 6 and all(p == pytest.approx(0.25) for p in points["fixed"])
    # the running mean starts at the first batch's mean log-ratio (0: fresh adapters leave the policy the reference)
    # (the first step's learning rate is warm-up's 0) and moves once the policy does; each batch is judged against
    # the mean before it
    assert len(points["running_mean"]) == 6 and points["running_mean"][0] == pytest.approx(0.0, abs=1e-6)
    assert abs(points["running_mean"][-1]) > 1e-4
