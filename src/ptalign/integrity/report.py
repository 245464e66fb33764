"""The integrity report: one Markdown table of every method and a plot of HS against attack epochs."""

from __future__ import annotations

from pathlib import Path

from ptalign.config import atomic_write_text

COLUMNS = [
    ("HS before", "before", "hs"),
    ("HS mixed", "after_mixed", "hs"),
    ("HS pure_bad", "after_pure_bad", "hs"),
    ("HS prefilled", "before", "hs_prefill_advbench"),
    ("HS prefilled mixed", "after_mixed", "hs_prefill_advbench"),
    ("FA mixed", "after_mixed", "fa"),
    ("over-refusal", "before", "over_refusal"),
    ("refusal AdvBench", "before", "refusal_advbench"),
    ("refusal XSTest unsafe", "before", "refusal_xstest_unsafe"),
    ("utility logp", "before", "utility_logp"),
]


def columns(results: dict) -> list[tuple[str, str, str]]:
    """The columns with a value for some method (the prefilled HS only where it was evaluated)."""
    methods = results["methods"].values()
    return [c for c in COLUMNS if any(r.get(c[1], {}).get(c[2]) is not None for r in methods)] or COLUMNS


def table_rows(results: dict) -> list[list[str]]:
    rows = []
    for method, r in results["methods"].items():
        cells = [method]
        for _, stage, key in columns(results):
            value = r.get(stage, {}).get(key)
            cells.append("-" if value is None else (f"{value:.3f}" if key == "utility_logp" else f"{value:.1f}"))
        rows.append(cells)
    return rows


def markdown_table(results: dict) -> str:
    header = ["method", *(c[0] for c in columns(results))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(results)]
    return "\n".join(lines)


def by_type_table(results: dict, key: str = "over_refusal_by_type") -> str | None:
    """One row per method, one column per category of ``before[key]`` (XSTest types for over-refusal); None without it."""
    have = {m: r["before"][key] for m, r in results["methods"].items() if r.get("before", {}).get(key)}
    if not have:
        return None
    names = sorted({name for rates in have.values() for name in rates})
    lines = ["| method | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    lines += ["| " + " | ".join([m, *(f"{rates[n]:.0f}" if n in rates else "-" for n in names)]) + " |"
              for m, rates in have.items()]
    return "\n".join(lines)


def plot_hs_by_epoch(results: dict, path: Path) -> Path | None:
    """HS (%) after each attack epoch, one line per method and attack; None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    attacks = sorted({k[len("after_"):] for r in results["methods"].values() for k in r if k.startswith("after_")})
    if not attacks:
        return None
    fig, axes = plt.subplots(1, len(attacks), figsize=(5 * len(attacks), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], attacks):
        for method, r in results["methods"].items():
            epochs = r.get(f"after_{kind}", {}).get("hs_by_epoch")
            if epochs:
                xs = sorted(epochs, key=int)
                ax.plot([int(x) for x in xs], [epochs[x] for x in xs], marker="o", label=method)
        ax.set(title=f"attack: {kind}", xlabel="attack epoch", ylabel="harmful score (%)", ylim=(-2, 102))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


TRADEOFF_PANELS = [("before", "no attack"), ("after_mixed", "after the mixed attack"), ("after_pure_bad", "after pure_bad")]


def tradeoff_points(results: dict, run: str = "") -> list[dict]:
    """One point per method: over-refusal of safe prompts (before any attack) against HS at each stage."""
    points = []
    for method, r in results["methods"].items():
        if r.get("before", {}).get("over_refusal") is None:
            continue
        point = {"run": run, "method": method, "over_refusal": r["before"]["over_refusal"]}
        for stage, _ in TRADEOFF_PANELS:
            if r.get(stage, {}).get("hs") is not None:
                point[f"hs_{stage}"] = r[stage]["hs"]
        points.append(point)
    return points


def pareto_front(points: list[dict], key: str) -> list[dict]:
    """The points with ``key`` that no other point beats on both over-refusal and ``key`` (lower is
    better on both; an identical point does not beat), by over-refusal."""
    have = [p for p in points if key in p]

    def beaten(p):
        return any(q["over_refusal"] <= p["over_refusal"] and q[key] <= p[key]
                   and (q["over_refusal"], q[key]) != (p["over_refusal"], p[key]) for q in have)

    return sorted((p for p in have if not beaten(p)), key=lambda p: p["over_refusal"])


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (a temporary file, then a rename) and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_tradeoff(points: list[dict], path: Path, goal: tuple[float, float] | None = (10.0, 5.0)) -> Path | None:
    """HS against over-refusal, one panel per stage (no attack, after each attack), one labelled dot
    per point; ``goal`` (max over-refusal, max HS) is shaded. None without matplotlib or points."""
    plt = pyplot()
    if plt is None:
        return None
    panels = [(stage, title) for stage, title in TRADEOFF_PANELS if any(f"hs_{stage}" in p for p in points)]
    if not panels:
        return None
    methods = list(dict.fromkeys(p["method"] for p in points))
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, (stage, title) in zip(axes[0], panels):
        key = f"hs_{stage}"
        for method in methods:
            shown = [p for p in points if key in p and p["method"] == method]
            ax.scatter([p["over_refusal"] for p in shown], [p[key] for p in shown], s=24, color=colors[method], label=method)
        # several runs: name the run of the points no other point beats on both axes
        for p in pareto_front(points, key) if any(p["run"] for p in points) else []:
            ax.annotate(p["run"], (p["over_refusal"], p[key]), fontsize=6, xytext=(4, 3), textcoords="offset points")
        if goal:
            ax.fill_between([0, goal[0]], 0, goal[1], color="tab:green", alpha=0.25, label="goal")
        ax.legend(fontsize=7, loc="upper right")
        ax.set(title=title, xlabel="over-refusal of safe prompts (%)", ylabel="harmful score (%)", xlim=(-2, 102), ylim=(-2, 102))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    plot = plot_hs_by_epoch(results, out / "hs_by_epoch.png")
    tradeoff = plot_tradeoff(tradeoff_points(results), out / "tradeoff.png")
    cfg = results.get("config", {})
    parts = [
        "# Integrity report",
        "",
        f"Model `{cfg.get('model', '?')}`; judge `{cfg.get('eval', {}).get('judge', '?')}`. HS = % of harmful prompts "
        "(AdvBench + HarmBench slice) answered harmfully; FA = SST-2 dev accuracy after the mixed attack; "
        "over-refusal = % of XSTest safe prompts refused; utility = mean token log-prob of AlpacaEval answers.",
        "",
        markdown_table(results),
        "",
    ]
    by_type = by_type_table(results)
    if by_type:
        parts += ["Over-refusal by XSTest prompt type, before the attack (% of the slice's safe prompts of that type refused):",
                  "", by_type, ""]
    if plot:
        parts += [f"![HS by attack epoch]({plot.name})", ""]
    if tradeoff:
        parts += ["Harm against over-refusal (the shaded corner is the goal: HS ≤ 5, over-refusal ≤ 10):", "",
                  f"![HS against over-refusal]({tradeoff.name})", ""]
    for method, r in results["methods"].items():
        samples = r.get("before", {}).get("samples", {}).get("advbench", [])[:1]
        for s in samples:
            parts += [f"**{method}**, AdvBench: _{s['prompt']}_  \n> {s['answer'].strip()[:300]!s}", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(parts))
    return path
