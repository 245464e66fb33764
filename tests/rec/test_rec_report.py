import json

from ptalign.rec.data import load_relevance_jsonl
from ptalign.rec.report import markdown_table, write_report


def test_markdown_table_bolds_the_best_value():
    table = markdown_table({"a": {"mrr": 0.5, "ndcg@5": 0.9}, "b": {"mrr": 0.75, "ndcg@5": None}}, metrics=["mrr", "ndcg@5"])
    assert table.splitlines() == [
        "| method | MRR | NDCG@5 |",
        "|---|---:|---:|",
        "| a | 0.500 | **0.900** |",
        "| b | **0.750** | – |",
    ]


def test_write_report_files_and_pinned_figures(relevance_file, tmp_path):
    queries = load_relevance_jsonl(relevance_file)
    perfect = {q.query_id: [c.label for c in q.candidates] for q in queries}
    reversed_ = {qid: [-s for s in scores] for qid, scores in perfect.items()}
    result = write_report(tmp_path, queries, {"oracle": perfect, "reversed": reversed_})
    assert result["methods"]["oracle"]["pairwise_accuracy"] == 1.0
    assert result["methods"]["reversed"]["pairwise_accuracy"] == 0.0
    assert result["methods"]["oracle"]["ndcg@10"] == 1.0 and result["methods"]["oracle"]["kendall_tau"] == 1.0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["n_queries"] == 3 and set(saved["methods"]) == {"oracle", "reversed"}
    assert len((tmp_path / "per_query.jsonl").read_text().splitlines()) == 6
    assert "| oracle | **1.000 ± 0.000**" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
