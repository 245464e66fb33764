"""Held-out confirmation: harmful and benign requests that no alignment run saw and no recipe was chosen on.

    python benchmarks/integrity_heldout.py NAME=MODEL [NAME=MODEL ...] [--exclude-from benchmarks/work]
        [--harmful 200] [--benign 200] [--alpaca-eval 200] [--out benchmarks/results/integrity_heldout.json]

Every recipe in the integrity benchmarks was chosen on the evaluation halves of AdvBench, HarmBench
and XSTest, so figures on those halves carry that selection. This script scores models on sets
that played no part in it:

* harmful: safety_tuned_llamas instructions (Bianchi et al. 2023) — the source of the alignment
  feedback's refusals and on-policy harmful answers — minus every prompt that appears in any
  training file under the ``--exclude-from`` folders (the runs' ``feedback``, ``pairs``, ``retain``,
  ``simulated_attack`` and ``attack_data`` JSONL); HS = % answered harmfully by the keyword judge (any answer without a
  refusal, the benchmarks' HS judge);
* benign: Arditi et al.'s harmless Alpaca instructions (``refusal_direction_harmless_test.json``),
  minus the same; refusal rate = % refused (the keyword judge);
* alpaca_eval: AlpacaEval's 805 instructions (Li et al. 2023; real users' requests from several
  sources, no alignment source draws them), minus the same; % refused. Everyday requests from
  another distribution than the benign set's pool, which ``feedback.ordinary`` trains on.

Seeded samples of each, answered greedily; one row per NAME, added to ``--out`` as soon as it is
scored (a row's figures already there are kept unless ``--redo``; a set added later is scored for
the rows that lack it), every answer with its verdicts in
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
import functools
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


def training_files(folders: list[Path]) -> list[Path]:
    """The training files (``TRAINING_FILES``) under ``folders``."""
    return [path for folder in folders for path in sorted(p for name in TRAINING_FILES for p in folder.rglob(name))]


def seen_prompts(folders: list[Path]) -> str:
    """Every user turn of every training file under ``folders``, joined into one searchable text."""
    from ptalign.integrity.datasets import jsonl_prompts

    return "\0".join(t for path in training_files(folders) for t in jsonl_prompts(path, required=False))


SETS = {
    "harmful": ("safety_tuned_llamas instructions unseen by the excluded runs, HS = % answered, non-empty and without a refusal (keywords)", "hs"),
    "benign": ("harmless Alpaca instructions (Arditi et al.) unseen by the excluded runs, % refused (keywords)", "benign_refused"),
    "alpaca_eval": ("AlpacaEval instructions unseen by the excluded runs, % refused (keywords)", "alpaca_eval_refused"),
}
"""Each held-out set: (its protocol line, the row's figure)."""


@functools.lru_cache(maxsize=4)
def pools(data_root: str | None = None) -> dict[str, list[str]]:
    """The deduplicated, stripped prompt pool of each set, in file order (what sample positions index);
    read once per data root (drawing, positions and the frozen sets all index it). Not to be modified."""
    from ptalign.integrity import datasets as D

    raw = {"harmful": [r.prompt for r in D.load_safety_tuned_llamas(data_root=data_root)],
           "benign": [r.prompt for r in D.load_harmless_instructions(data_root=data_root)],
           "alpaca_eval": [r.prompt for r in D.load_alpaca_eval(data_root=data_root)]}
    return {name: list(dict.fromkeys(p.strip() for p in prompts if p.strip())) for name, prompts in raw.items()}


def heldout_sets(exclude: list[Path], sizes: dict[str, int], seed: int = 0,
                 data_root: str | None = None) -> tuple[dict[str, list[str]], dict]:
    """``sizes[set]`` sampled prompts of each named set that none of the excluded runs saw, and how many were left out."""
    seen, unique = seen_prompts(exclude), pools(data_root)
    sets, counts = {}, {}
    for name, k in sizes.items():
        unseen = [p for p in unique[name] if p not in seen]
        if len(unseen) < k:
            raise ValueError(f"only {len(unseen)} {name} prompts are unseen by the excluded runs, asked for {k}")
        sets[name] = random.Random(seed).sample(unseen, k)
        counts[name] = {"pool": len(unique[name]), "seen_by_runs": len(unique[name]) - len(unseen), "sampled": k}
    return sets, counts


def sample_positions(sets: dict[str, list[str]], data_root: str | None = None) -> dict[str, list[int]]:
    """Each sampled prompt's position in its pool (:func:`pools`): the frozen sample, without the prompts."""
    index = {name: {p: i for i, p in enumerate(unique)} for name, unique in pools(data_root).items()}
    return {name: [index[name][p] for p in prompts] for name, prompts in sets.items()}


def frozen_sets(positions: dict[str, list[int]], exclude: list[Path], data_root: str | None = None) -> dict[str, list[str]]:
    """The frozen sample's prompts; fails if a training file under ``exclude`` has used any of them since."""
    unique = pools(data_root)
    try:
        sets = {name: [unique[name][i] for i in rows] for name, rows in positions.items()}
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
    from ptalign.integrity.datasets import jsonl_prompts

    return next((str(path) for path in training_files(folders) if prompt in jsonl_prompts(path, required=False)), "a run")


def frozen_protocol(stored: dict | None, args, exclude: list[Path], out: str) -> tuple[dict, dict[str, list[str]]]:
    """The results file's protocol with every asked set's sample frozen, and the sets' prompts: a set
    already frozen is taken from ``stored`` (checked against the settings and against the runs since);
    a set asked for for the first time is drawn now, from the prompts no run has seen."""
    sizes = {"harmful": args.harmful, "benign": args.benign, "alpaca_eval": args.alpaca_eval}
    settings = {"seed": args.seed, "max_new_tokens": args.max_new_tokens, "excluded_runs_under": [repo_relative(p) for p in exclude]}
    protocol = dict(stored or settings)
    protocol.setdefault("counts", {})
    protocol.setdefault("sample", {})
    frozen = {name: size for name, size in sizes.items() if name in protocol["sample"]}
    if ({k: protocol.get(k) for k in settings} != settings
            or any(protocol.get(name) != SETS[name][0] or protocol["counts"][name]["sampled"] != size for name, size in frozen.items())):
        raise ValueError(f"{out} was made with other sets or settings; use another --out")
    sets = frozen_sets({name: protocol["sample"][name] for name in frozen}, exclude, args.data_root) if frozen else {}
    new = {name: size for name, size in sizes.items() if name not in frozen and size > 0}
    if new:
        drawn, counts = heldout_sets(exclude, new, args.seed, args.data_root)
        positions = sample_positions(drawn, args.data_root)
        for name in new:
            protocol[name] = SETS[name][0]
            protocol["counts"][name], protocol["sample"][name] = counts[name], positions[name]
        sets.update(drawn)
    return protocol, {name: sets[name] for name in SETS if name in sets}


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (the results file is the same in every clone)."""
    try:
        return str(path.resolve().relative_to(ROOT.parent))
    except ValueError:
        return str(path)


def score_model(model: str, sets: dict[str, list[str]], max_new_tokens: int = 48, batch_size: int = 16,
                data_root: str | None = None, answers_to: Path | None = None) -> dict:
    """Each set's figure (:data:`SETS`) for one model, from greedy answers; every answer and verdict goes
    to ``answers_to`` (JSONL; the lines of sets not scored now are kept) when given."""
    from ptalign.integrity.judges import KeywordJudge, harmful_score, refusal_rate
    from ptalign.integrity.recipes import chat
    from ptalign.models import generate, load_model

    policy, tokenizer = load_model(model)
    judge = KeywordJudge(data_root=data_root)
    t0 = time.perf_counter()
    owners = [name for name, prompts in sets.items() for _ in prompts]
    prompts = [p for ps in sets.values() for p in ps]
    answers = generate(policy, tokenizer, [chat(p) for p in prompts], max_new_tokens=max_new_tokens,
                       batch_size=batch_size, progress=True)
    verdicts = judge.judge(prompts, answers)
    if answers_to is not None:
        kept = [line for line in (answers_to.read_text().splitlines() if answers_to.is_file() else [])
                if line.strip() and json.loads(line).get("set") not in sets]
        atomic_write_text(answers_to, "".join(line + "\n" for line in kept) + "".join(
            json.dumps({"set": o, "prompt": p, "answer": a, "refusal": v.refusal, "harmful": v.harmful}) + "\n"
            for o, p, a, v in zip(owners, prompts, answers, verdicts)))
    out = {"model": model, "seconds": time.perf_counter() - t0, "samples": []}
    for name in sets:
        mine = [i for i, o in enumerate(owners) if o == name]
        judged = [verdicts[i] for i in mine]
        out[SETS[name][1]] = harmful_score(judged) if name == "harmful" else refusal_rate(judged)
        out["samples"] += [{"prompt": prompts[i], "answer": answers[i]} for i in mine[:2]]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="NAME=MODEL_FOLDER (or NAME=embedded)")
    parser.add_argument("--exclude-from", type=Path, action="append", default=None,
                        help="folders whose runs' training files' prompts are excluded (default benchmarks/work)")
    parser.add_argument("--harmful", type=int, default=200)
    parser.add_argument("--benign", type=int, default=200)
    parser.add_argument("--alpaca-eval", type=int, default=200)
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
        protocol, sets = frozen_protocol(result.get("protocol"), args, exclude, str(args.out))
        result["protocol"] = protocol
        counts = protocol["counts"]
        rows = result.setdefault("rows", {})
        if args.write_sample is not None:
            atomic_write_text(args.write_sample, "".join(json.dumps({"set": name, "prompt": p}) + "\n"
                                                         for name, prompts in sets.items() for p in prompts))
            atomic_write_text(args.out, json.dumps(result, indent=1))
            console.print(f"wrote the frozen sample ({sum(map(len, sets.values()))} prompts) to {args.write_sample}")
        for name, model in pairs:
            todo = {k: v for k, v in sets.items() if args.redo or SETS[k][1] not in rows.get(name, {})}
            if not todo:
                continue
            if model != "embedded" and not (Path(model) / "config.json").is_file():
                raise FileNotFoundError(f"{name}: no model folder at {model} (no config.json)")
            console.print(f"[bold]{name}[/]: " + " + ".join(f"{len(v)} {k}" for k, v in todo.items()) + " prompts")
            scored = score_model(model, todo, args.max_new_tokens, data_root=args.data_root,
                                 answers_to=args.answers_dir / f"{name}.jsonl")
            before = {} if args.redo else rows.get(name, {})
            scored["seconds"] += before.get("seconds", 0.0)
            scored["samples"] = before.get("samples", []) + scored["samples"]
            rows[name] = {**before, **scored}
            atomic_write_text(args.out, json.dumps(result, indent=1))
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[bold red]error:[/] {err}")
        return 2
    t = Table(title="held out: " + ", ".join(f"{c['sampled']} {name} (of {c['pool'] - c['seen_by_runs']} unseen)"
                                             for name, c in counts.items()))
    columns = [(SETS[name][1], "HS (harmful answered)" if name == "harmful" else f"{name} refused") for name in counts]
    t.add_column("run")
    for _, title in columns:
        t.add_column(title)
    for name, r in rows.items():
        t.add_row(name, *(f"{r[key]:.1f}" if key in r else "-" for key, _ in columns))
    Console(width=160).print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
