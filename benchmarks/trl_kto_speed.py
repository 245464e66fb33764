"""ptalign's KTO trainer against TRL's KTOTrainer on the same work, in one run on this machine.

Work: the embedded SmolLM2-135M-Instruct, LoRA r=16 on all linear layers, batch 8, max length
256, one epoch over 256 unpaired examples from ../shared/data/safety (even positions: refusals
from safety_tuned_llamas as desirable; odd: qi2023 pure_bad compliance as undesirable -- only
111 exist, so they repeat). Each trainer runs in a subprocess of its own (peak RSS per run):

  trl_default      TRL KTOTrainer, its defaults (reference log-probs recomputed every step)
  trl_precompute   TRL KTOTrainer with precompute_ref_log_probs=True
  ptalign          ptalign, cached reference log-probs, length bucketing
  ptalign_trl_order  ptalign with TRL's batch composition and order (no bucketing, no shuffle):
                   its per-step loss is compared with TRL's to show the curves match

Figures: examples/s of each (wall time from trainer construction to the end of training,
data preparation and reference log-probs included), speedup_vs_trl_default and
speedup_vs_trl_precompute, peak RSS, the loss curves, our tokens/s and achieved GFLOP/s
against the machine's measured fp32 matmul rate.

    .venv/bin/python benchmarks/trl_kto_speed.py            # all four runs (~45 min on 2 cores)
    .venv/bin/python benchmarks/trl_kto_speed.py --n 32     # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PTALIGN_SHARED_DATA", REPO.parent / "shared" / "data"))
WORK = REPO / "benchmarks" / "work"
RESULT = REPO / "benchmarks" / "results" / "trl_kto_speed.json"
RUNS = ["trl_default", "trl_precompute", "ptalign", "ptalign_trl_order"]
LR, BETA, BATCH, MAX_LEN, SEED = 1e-4, 0.1, 8, 256, 42


def build_data(n: int) -> Path:
    """256 alternating desirable/undesirable chat examples, written as feedback JSONL."""
    safety = SHARED / "safety" / "harmful_responses"
    good = json.loads((safety / "safety_tuned_llamas_safety_only_2483.json").read_text())
    bad = json.loads((safety / "qi2023_pure_bad_111.json").read_text())
    rows = []
    for i in range(n):
        src, label = (good[i // 2], True) if i % 2 == 0 else (bad[(i // 2) % len(bad)], False)
        prompt = src["instruction"] + (f"\n\n{src['input']}" if src.get("input") else "")
        rows.append({"prompt": [{"role": "user", "content": prompt}],
                     "completion": [{"role": "assistant", "content": src["output"]}], "label": label})
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"kto_bench_{n}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_trl(data: Path, precompute: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import KTOConfig, KTOTrainer

    from ptalign.models import load_model

    model, tok = load_model("embedded")
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    ds = Dataset.from_list(rows)
    args = KTOConfig(
        output_dir=str(WORK / "trl_out"), per_device_train_batch_size=BATCH, max_length=MAX_LEN, num_train_epochs=1,
        learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0.1,  # a ratio when < 1 (transformers 5)
        beta=BETA, logging_steps=1, report_to=[],
        save_strategy="no", precompute_ref_log_probs=precompute, seed=SEED, use_cpu=True, dataloader_num_workers=0,
        max_grad_norm=1.0, weight_decay=0.0, bf16=False,  # float32 like ours: same numerics, comparable loss curves
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    t0 = time.perf_counter()
    trainer = KTOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora)
    trainer.train()
    seconds = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens = sum(int(b["attention_mask"].sum()) + int(b["KL_attention_mask"].sum()) for b in trainer.get_train_dataloader())
    return {"seconds": seconds, "losses": losses, "tokens": tokens, "threads": torch.get_num_threads()}


def run_ptalign(data: Path, trl_order: bool) -> dict:
    from ptalign.config import build_config
    from ptalign.trainer import train

    out = WORK / ("ptalign_trl_order" if trl_order else "ptalign")
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(WORK / "cache" / "reference", ignore_errors=True)  # the timed run pays for the reference pass
    cfg = build_config({
        "model": {"name": "embedded", "lora": True, "lora_r": 16, "lora_alpha": 32},
        "data": {"train": str(data), "max_length": MAX_LEN, "bucket_by_length": not trl_order, "shuffle": not trl_order},
        "loss": {"name": "kto", "beta": BETA},
        "train": {"output_dir": str(out), "batch_size": BATCH, "learning_rate": LR, "warmup_ratio": 0.1,
                  "schedule": "cosine", "seed": SEED},
    })
    t0 = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"seconds": seconds, "losses": [r["loss"] for r in rows], "tokens": sum(r["tokens"] for r in rows),
            "train_loop_seconds": sum(r["seconds"] for r in rows)}


def matmul_gflops(n: int = 1024, reps: int = 20) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def child(name: str, data: Path) -> None:
    result = run_trl(data, precompute=name == "trl_precompute") if name.startswith("trl") else run_ptalign(data, name == "ptalign_trl_order")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="number of examples")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ",".join(RUNS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, Path(args.data))
    if not SHARED.is_dir():
        sys.exit(f"shared data not found at {SHARED}; set PTALIGN_SHARED_DATA")
    data = build_data(args.n)
    os.environ["PTALIGN_CACHE"] = str(WORK / "cache")  # the benchmark's own model and reference cache
    from ptalign.models import embedded_model_dir

    embedded_model_dir()  # convert the GGUF once, outside every timed run
    results = {}
    for name in args.runs.split(","):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--data", str(data)], capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"{name} failed:\n{proc.stderr[-4000:]}")
        results[name] = json.loads(line[len("RESULT "):])
        results[name]["examples_per_s"] = args.n / results[name]["seconds"]
    report(results, args.n)


def report(results: dict, n: int) -> None:
    from rich.console import Console
    from rich.table import Table

    peak = matmul_gflops()
    params = 134_515_008  # SmolLM2-135M (embeddings tied; the LM head counted once per token)
    out = {"n_examples": n, "batch_size": BATCH, "max_length": MAX_LEN, "matmul_fp32_gflops": peak, "runs": results}
    for name, r in results.items():
        # forward 2P + LoRA backward (input grads) 2P per trained token, 2P per no-grad KL token: ~ 3P per counted token
        r["approx_gflops"] = 3 * params * r["tokens"] / r["seconds"] / 1e9
        r["fraction_of_matmul_peak"] = r["approx_gflops"] / peak
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
    ours = results.get("ptalign")
    if ours and "trl_default" in results:
        out["speedup_vs_trl_default"] = ours["examples_per_s"] / results["trl_default"]["examples_per_s"]
    if ours and "trl_precompute" in results:
        out["speedup_vs_trl_precompute"] = ours["examples_per_s"] / results["trl_precompute"]["examples_per_s"]
    if "ptalign_trl_order" in results and "trl_default" in results:
        a, b = results["ptalign_trl_order"]["losses"], results["trl_default"]["losses"]
        out["loss_curve_max_abs_diff_vs_trl"] = max(abs(x - y) for x, y in zip(a, b))
        out["loss_curve_steps_compared"] = min(len(a), len(b))
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(out, indent=1))
    table = Table(title=f"KTO, SmolLM2-135M, LoRA r=16, {n} examples, batch {BATCH}, max length {MAX_LEN} (matmul peak {peak:.0f} GFLOP/s)")
    for col in ("run", "seconds", "examples/s", "tokens/s", "peak RSS MB", "~GFLOP/s", "first loss", "last loss"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, f"{r['seconds']:.0f}", f"{r['examples_per_s']:.3f}", f"{r['tokens_per_s']:.0f}", f"{r['peak_rss_mb']:.0f}",
                      f"{r['approx_gflops']:.1f}", f"{r['losses'][0]:.4f}", f"{r['losses'][-1]:.4f}")
    Console().print(table)
    for k in ("speedup_vs_trl_default", "speedup_vs_trl_precompute", "loss_curve_max_abs_diff_vs_trl"):
        if k in out:
            print(f"{k}: {out[k]:.4f}")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
