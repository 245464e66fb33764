"""The training recipe end to end on a tiny model: run folder, metrics, resume, export, losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from ptalign.cli import app

REPO = Path(__file__).resolve().parents[1]


def write_config(path: Path, model_dir: Path, out: Path, **groups) -> Path:
    cfg = {
        "model": {"name": str(model_dir), "lora": True, "lora_r": 4, "lora_alpha": 8, "cache_dir": str(path.parent / "cache")},
        "data": {"train": "demo", "max_length": 128},
        "loss": {"name": "kto", "beta": 0.1},
        "train": {"output_dir": str(out), "batch_size": 4, "learning_rate": 1e-3, "seed": 7},
    }
    for group, values in groups.items():
        cfg[group] = dict(values) if group == "loss" else {**cfg[group], **values}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_writes_run_folder_and_export_loads(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, out)
    result = CliRunner().invoke(app, ["train", str(cfg), "train.max_steps=6", "train.save_every=2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "reference_point", "tokens_per_s", "lr"} <= r.keys() for r in rows)
    assert any("rewards/chosen" in r and "rewards/rejected" in r for r in rows)
    assert rows[0]["loss"] == pytest.approx(0.5)  # policy == reference at step 1: 1 - sigmoid(0)
    assert rows[-1]["reference_point"] >= 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["max_steps"] == 6
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000004", "step-000006"]
    assert (out / "final" / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text())["steps"] == 6

    exported = tmp_path / "exported"
    result = CliRunner().invoke(app, ["export", str(out), str(exported)])
    assert result.exit_code == 0, result.output
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(exported)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for n, p in model.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed, "the merged model must differ from the base after training"


def test_second_run_reuses_cached_reference(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, tmp_path / "a", train={"max_steps": 1})
    first = CliRunner().invoke(app, ["train", str(cfg)])
    second = CliRunner().invoke(app, ["train", str(cfg), f"train.output_dir={tmp_path / 'b'}"])
    assert "computed" in first.output and "loaded from cache" in second.output


def test_bf16_autocast_reference_matches_policy_and_has_its_own_cache(tiny_model_dir, tmp_path):
    """Under bf16 autocast the reference log-probs are taken in bf16 too: the implied rewards of
    step 1 are exactly 0 (a float32 reference would leave bf16 rounding in them), and the cached
    float32 reference is not reused for it."""
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, tmp_path / "fp32", model={"lora": False},
                       train={"max_steps": 1, "learning_rate": 1e-4})
    fp32 = CliRunner().invoke(app, ["train", str(cfg), "train.mixed_precision=no"])
    assert fp32.exit_code == 0, fp32.output
    bf16 = CliRunner().invoke(app, ["train", str(cfg), "train.mixed_precision=bf16", f"train.output_dir={tmp_path / 'bf16'}"])
    assert bf16.exit_code == 0, bf16.output
    assert "computed" in bf16.output and "loaded from cache" not in bf16.output
    row = json.loads((tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["rewards/chosen"] == 0.0 and row["rewards/rejected"] == 0.0 and row["loss"] == pytest.approx(0.5)
    assert yaml.safe_load((tmp_path / "bf16" / "config.yaml").read_text())["train"]["mixed_precision"] == "bf16"


def test_existing_run_needs_resume(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, tmp_path / "run", train={"max_steps": 1})
    assert CliRunner().invoke(app, ["train", str(cfg)]).exit_code == 0
    again = CliRunner().invoke(app, ["train", str(cfg)])
    assert again.exit_code == 2 and "--resume" in again.output


def test_bad_data_line_fails_before_training(tiny_model_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt": "hi", "completion": "hello", "label": True})
    data.write_text(good + "\n" + good + "\n" + '{"prompt": "hi", "completion": "x", "label": "yes"}\n')
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, tmp_path / "run", data={"train": str(data)})
    result = CliRunner().invoke(app, ["train", str(cfg)])
    assert result.exit_code == 2
    assert f"{data}:3:" in " ".join(result.output.split()).replace(" ", "") or ":3:" in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "groups",
    [
        {"loss": {"name": "prospect", "loss_aversion": 2.25, "gain_curvature": 0.88, "reference_point": "running_mean"}},
        {"loss": {"name": "prospect", "reference_point": "fixed", "reference_value": 0.0, "probability_weighting": True}},
        {"loss": {"name": "sft"}},
        {"loss": {"name": "dpo"}, "data": {"train": "demo_pairs"}},
        {"loss": {"name": "ipo"}, "data": {"train": "demo_pairs"}},
        {"loss": {"name": "simpo"}, "data": {"train": "demo_pairs"}},
        {"loss": {"name": "kto"}, "model": {"lora": False}, "train": {"reference": "live", "learning_rate": 1e-4}},
        {"loss": {"name": "kto"}, "train": {"reference": "live", "grad_accum": 2}},
    ],
    ids=["prospect-running-mean", "prospect-fixed-weighted", "sft", "dpo", "ipo", "simpo", "kto-full-live", "kto-lora-live-accum"],
)
def test_every_loss_trains(tiny_model_dir, tmp_path, groups):
    out = tmp_path / "run"
    train = {"max_steps": 3, **groups.pop("train", {})}
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, out, train=train, **groups)
    result = CliRunner().invoke(app, ["train", str(cfg)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert rows[-1]["grad_norm"] > 0


def test_paired_loss_rejects_unpaired_data(tiny_model_dir, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, tmp_path / "run", loss={"name": "dpo"})
    result = CliRunner().invoke(app, ["train", str(cfg)])
    assert result.exit_code == 2 and "chosen" in result.output


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    last = sorted((run / "checkpoints").iterdir())[-1]
    return load_file(last / "trainable.safetensors")


def test_killed_run_resumes_to_identical_weights(tiny_model_dir, tmp_path):
    """SIGKILL a run part-way; `--resume` ends with bit-identical weights to an uninterrupted run."""
    common = {"epochs": 3, "save_every": 1, "keep_checkpoints": 50}
    data = {"train": "demo"}
    straight = write_config(tmp_path / "a.yaml", tiny_model_dir, tmp_path / "straight", train=common, data=data)
    killed = write_config(tmp_path / "b.yaml", tiny_model_dir, tmp_path / "killed", train=common, data=data)
    cli = [sys.executable, "-m", "ptalign.cli"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([*cli, "train", str(straight)], check=True, capture_output=True, env=env)

    proc = subprocess.Popen([*cli, "train", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts.is_dir() and any(p.name.startswith("step-") for p in ckpts.iterdir())):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "final").exists(), "the run finished before it could be killed"
    steps_at_kill = len(list(ckpts.glob("step-*")))
    subprocess.run([*cli, "train", str(killed), "--resume"], check=True, capture_output=True, env=env)

    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "killed")
    assert steps_at_kill < 48 and a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    metrics = [json.loads(l)["step"] for l in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert metrics == list(range(1, 49))


def test_two_process_run_with_accelerate_launch(tiny_model_dir, tmp_path):
    """DDP on two CPU processes: one reference pass, one run folder, metrics over both processes."""
    out = tmp_path / "ddp"
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, out, train={"max_steps": 3})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "ptalign.cli", "train", str(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["examples_per_s"] * r["seconds"] == pytest.approx(8) for r in rows)  # 2 processes x batch 4
    assert rows[1]["epoch"] == pytest.approx(1 / 8)  # 16 batches of 4 shared by 2 processes: 8 steps an epoch
    assert "done:" in proc.stderr
    assert (out / "final" / "adapter" / "adapter_model.safetensors").is_file()
