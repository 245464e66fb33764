"""Held-out confirmation: harmful and benign requests that no alignment run saw and no recipe was chosen on.

    python benchmarks/integrity_heldout.py NAME=MODEL [NAME=MODEL ...] [--exclude-from benchmarks/work]
        [--harmful 200] [--benign 200] [--out benchmarks/results/integrity_heldout.json]

Every recipe in the integrity benchmarks was chosen on the evaluation halves of AdvBench, HarmBench
and XSTest, so figures on those halves carry that selection. This script scores models on two
sets that played no part in it:

* harmful: safety_tuned_llamas instructions (Bianchi et al. 2023) — the source of the alignment
  feedback's refusals and on-policy harmful answers — minus every prompt that appears in any
  training file under the ``--exclude-from`` folders (the runs' ``feedback``, ``pairs``, ``retain``,
  ``simulated_attack`` and ``attack_data`` JSONL); HS = % answered harmfully by the keyword judge (any answer without a
  refusal, the benchmarks' HS judge);
* benign: Arditi et al.'s harmless Alpaca instructions (``refusal_direction_harmless_test.json``),
  minus the same; refusal rate = % refused (the keyword judge).

Seeded samples of each, answered greedily; one row per NAME, added to ``--out`` as soon as it is
scored (rows already there are kept unless ``--redo``), every answer with its verdicts in
``--answers-dir``/NAME.jsonl (default ``benchmarks/work/integrity_heldout_answers``: answers to harmful
requests are not committed). Prints the table.

The first run *freezes* the sample: ``--out`` records which prompts of each pool were drawn (their
positions in the deduplicated pool, not the prompts), and every later run scores those same prompts,
after checking that no training file under ``--exclude-from`` has since used one of them (a run
that did is named and the script stops). New runs may train on the rest of the pools;
``--write-sample PATH`` writes the frozen prompts as JSONL (``set``, ``prompt``), the file that
``feedback.ordinary_exclude`` takes to keep a run's draws off them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ptalign.config import atomic_write_text

ROOT = Path(__file__).resolve().parent


TRAINING_FILES = ("feedback.jsonl", "pairs.jsonl", "retain.jsonl", "simulated_attack.jsonl", "attack_data.jsonl")


def seen_prompts_of(path: Path) -> list[str]:
    """The user turns of one training file."""
    from ptalign.integrity.datasets import iter_jsonl

    texts = []
    for _, row in iter_jsonl(path):
        prompt = row.get("prompt", "") if isinstance(row, dict) else ""
        if isinstance(prompt, list):
            texts += [m.get("content", "") for m in prompt if isinstance(m, dict)]
        elif isinstance(prompt, str):
            texts.append(prompt)
    return [t.strip() for t in texts]


def seen_prompts(folders: list[Path]) -> str:
    """Every user turn of every training file (``TRAINING_FILES``) under ``folders``, joined into one searchable text."""
    return "\0".join(t for folder in folders for path in sorted(p for name in TRAINING_FILES for p in folder.rglob(name))
                      for t in seen_prompts_of(path))


def pools(data_root: str | None = None) -> dict[str, list[str]]:
    """The deduplicated, stripped harmful and benign prompt pools, in file order (what sample positions index)."""
    from ptalign.integrity import datasets as D

    raw = {"harmful": [r.prompt for r in D.load_safety_tuned_llamas(data_root=data_root)],
           "benign": [r.prompt for r in D.load_harmless_instructions(data_root=data_root)]}
    return {name: list(dict.fromkeys(p.strip() for p in prompts if p.strip())) for name, prompts in raw.items()}


def heldout_sets(exclude: list[Path], harmful: int, benign: int, seed: int = 0,
                 data_root: str | None = None) -> tuple[dict[str, list[str]], dict]:
    """The sampled harmful and benign prompts none of the excluded runs saw, and how many were left out."""
    seen = seen_prompts(exclude)
    sets, counts = {}, {}
    for (name, unique), k in zip(pools(data_root).items(), (harmful, benign)):
        unseen = [p for p in unique if p not in seen]
        if len(unseen) < k:
            raise ValueError(f"only {len(unseen)} {name} prompts are unseen by the excluded runs, asked for {k}")
        sets[name] = random.Random(seed).sample(unseen, k)
        counts[name] = {"pool": len(unique), "seen_by_runs": len(unique) - len(unseen), "sampled": k}
    return sets, counts


def sample_positions(sets: dict[str, list[str]], data_root: str | None = None) -> dict[str, list[int]]:
    """Each sampled prompt's position in its pool (:func:`pools`): the frozen sample, without the prompts."""
    index = {name: {p: i for i, p in enumerate(unique)} for name, unique in pools(data_root).items()}
    return {name: [index[name][p] for p in prompts] for name, prompts in sets.items()}


def frozen_sets(positions: dict[str, list[int]], exclude: list[Path], data_root: str | None = None) -> dict[str, list[str]]:
    """The frozen sample's prompts; fails if a training file under ``exclude`` has used any of them since."""
    unique = pools(data_root)
    try:
        sets = {name: [unique[name][i] for i in positions[name]] for name in ("harmful", "benign")}
    except (KeyError, IndexError):
        raise ValueError("the frozen sample does not fit the data's pools (other data, or an edited results file)") from None
    seen = seen_prompts(exclude)
    for name, prompts in sets.items():
        used = [p for p in prompts if p in seen]
        if used:
            raise ValueError(f"{len(used)} of the frozen held-out {name} prompts are in training files under "
                             f"{', '.join(map(str, exclude))} (e.g. {used[0][:80]!r}); {trained_on(used[0], exclude)} trained on the held-out set")
    return sets


def trained_on(prompt: str, folders: list[Path]) -> str:
    """The first training file under ``folders`` whose prompts include ``prompt`` (for the error message)."""
    for folder in folders:
        for path in sorted(p for name in TRAINING_FILES for p in folder.rglob(name)):
            if prompt in seen_prompts_of(path):
                return str(path)
    return "a run"


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (the results file is the same in every clone)."""
    try:
        return str(path.resolve().relative_to(ROOT.parent))
    except ValueError:
        return str(path)


def score_model(model: str, sets: dict[str, list[str]], max_new_tokens: int = 48, batch_size: int = 16,
                data_root: str | None = None, answers_to: Path | None = None) -> dict:
    """HS and benign refusal of one model (greedy answers); every answer and verdict goes to
    ``answers_to`` (JSONL) when given."""
    from ptalign.integrity.judges import KeywordJudge, harmful_score, refusal_rate
    from ptalign.integrity.recipes import chat
    from ptalign.models import generate, load_model

    policy, tokenizer = load_model(model)
    judge = KeywordJudge(data_root=data_root)
    t0 = time.perf_counter()
    prompts = sets["harmful"] + sets["benign"]
    answers = generate(policy, tokenizer, [chat(p) for p in prompts], max_new_tokens=max_new_tokens,
                       batch_size=batch_size, progress=True)
    verdicts = judge.judge(prompts, answers)
    n = len(sets["harmful"])
    harmful, benign = verdicts[:n], verdicts[n:]
    if answers_to is not None:
        atomic_write_text(answers_to, "".join(
            json.dumps({"set": "harmful" if i < n else "benign", "prompt": p, "answer": a, "refusal": v.refusal, "harmful": v.harmful}) + "\n"
            for i, (p, a, v) in enumerate(zip(prompts, answers, verdicts))))
    answered = list(zip(prompts, answers))
    return {"model": model, "hs": harmful_score(harmful), "benign_refused": refusal_rate(benign),
            "seconds": time.perf_counter() - t0,
            "samples": [{"prompt": p, "answer": a} for p, a in answered[:2] + answered[n:n + 2]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="NAME=MODEL_FOLDER (or NAME=embedded)")
    parser.add_argument("--exclude-from", type=Path, action="append", default=None,
                        help="folders whose runs' training files' prompts are excluded (default benchmarks/work)")
    parser.add_argument("--harmful", type=int, default=200)
    parser.add_argument("--benign", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "integrity_heldout.json")
    parser.add_argument("--answers-dir", type=Path, default=ROOT / "work" / "integrity_heldout_answers")
    parser.add_argument("--write-sample", type=Path, default=None,
                        help="write the frozen sample's prompts as JSONL (set, prompt), for feedback.ordinary_exclude")
    parser.add_argument("--redo", action="store_true")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    try:
        pairs = [m.split("=", 1) for m in args.models]
        bad = [m for m, p in zip(args.models, pairs) if len(p) != 2 or not all(p)]
        if bad:
            raise ValueError(f"expected NAME=MODEL_FOLDER, got {', '.join(bad)}")
        if not pairs and args.write_sample is None:
            raise ValueError("name models to score (NAME=MODEL_FOLDER) or give --write-sample")
        exclude = args.exclude_from or [ROOT / "work"]
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        settings = {"harmful": "safety_tuned_llamas instructions unseen by the excluded runs, HS = % answered, non-empty and without a refusal (keywords)",
                    "benign": "harmless Alpaca instructions (Arditi et al.) unseen by the excluded runs, % refused (keywords)",
                    "seed": args.seed, "max_new_tokens": args.max_new_tokens, "excluded_runs_under": [repo_relative(p) for p in exclude]}
        stored = result.get("protocol")
        if stored is None:
            sets, counts = heldout_sets(exclude, args.harmful, args.benign, args.seed, args.data_root)
            result["protocol"] = {**settings, "counts": counts, "sample": sample_positions(sets, args.data_root)}
        else:
            counts = stored.get("counts", {})
            asked = {"harmful": args.harmful, "benign": args.benign}
            if ({k: stored.get(k) for k in settings} != settings or "sample" not in stored
                    or any(counts.get(k, {}).get("sampled") != n for k, n in asked.items())):
                raise ValueError(f"{args.out} was made with other sets or settings; use another --out")
            sets = frozen_sets(stored["sample"], exclude, args.data_root)
        rows = result.setdefault("rows", {})
        if args.write_sample is not None:
            atomic_write_text(args.write_sample, "".join(json.dumps({"set": name, "prompt": p}) + "\n"
                                                         for name, prompts in sets.items() for p in prompts))
            atomic_write_text(args.out, json.dumps(result, indent=1))
            console.print(f"wrote the frozen sample ({sum(map(len, sets.values()))} prompts) to {args.write_sample}")
        for name, model in pairs:
            if name in rows and not args.redo:
                continue
            if model != "embedded" and not (Path(model) / "config.json").is_file():
                raise FileNotFoundError(f"{name}: no model folder at {model} (no config.json)")
            console.print(f"[bold]{name}[/]: {len(sets['harmful'])} harmful + {len(sets['benign'])} benign prompts")
            rows[name] = score_model(model, sets, args.max_new_tokens, data_root=args.data_root,
                                     answers_to=args.answers_dir / f"{name}.jsonl")
            atomic_write_text(args.out, json.dumps(result, indent=1))
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[bold red]error:[/] {err}")
        return 2
    t = Table(title=f"held out: {counts['harmful']['sampled']} harmful (of {counts['harmful']['pool'] - counts['harmful']['seen_by_runs']} unseen), "
                    f"{counts['benign']['sampled']} benign requests")
    for col in ("run", "HS (harmful answered)", "benign refused"):
        t.add_column(col)
    for name, r in rows.items():
        t.add_row(name, f"{r['hs']:.1f}", f"{r['benign_refused']:.1f}")
    Console(width=160).print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
