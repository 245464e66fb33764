"""The integrity report: one Markdown table of every method and a plot of HS against attack epochs."""

from __future__ import annotations

from pathlib import Path

from ptalign.config import atomic_write_text

COLUMNS = [
    ("HS before", "before", "hs"),
    ("HS mixed", "after_mixed", "hs"),
    ("HS pure_bad", "after_pure_bad", "hs"),
    ("FA mixed", "after_mixed", "fa"),
    ("over-refusal", "before", "over_refusal"),
    ("refusal AdvBench", "before", "refusal_advbench"),
    ("utility logp", "before", "utility_logp"),
]


def table_rows(results: dict) -> list[list[str]]:
    rows = []
    for method, r in results["methods"].items():
        cells = [method]
        for _, stage, key in COLUMNS:
            value = r.get(stage, {}).get(key)
            cells.append("-" if value is None else (f"{value:.3f}" if key == "utility_logp" else f"{value:.1f}"))
        rows.append(cells)
    return rows


def markdown_table(results: dict) -> str:
    header = ["method", *(c[0] for c in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(results)]
    return "\n".join(lines)


def plot_hs_by_epoch(results: dict, path: Path) -> Path | None:
    """HS (%) after each attack epoch, one line per method and attack; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    plot = plot_hs_by_epoch(results, out / "hs_by_epoch.png")
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
    if plot:
        parts += [f"![HS by attack epoch]({plot.name})", ""]
    for method, r in results["methods"].items():
        samples = r.get("before", {}).get("samples", {}).get("advbench", [])[:1]
        for s in samples:
            parts += [f"**{method}**, AdvBench: _{s['prompt']}_  \n> {s['answer'].strip()[:300]!s}", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(parts))
    return path
