import json

import pytest

QUERIES = [
    ("q1", "cordless drill", [("d1", "DeWalt 20V Cordless Drill Kit", "3"), ("d2", "Drill bit set, 21 pieces", "1.67"),
                              ("d3", "Makita cordless drill driver", "2.67"), ("d4", "Garden hose 50 ft.", "1")]),
    ("q2", "white interior paint", [("p1", "Behr white eggshell interior paint", "3"), ("p2", "Paint roller cover", "2"),
                                    ("p3", "Exterior deck stain, cedar", "1.33")]),
    ("q3", "led bulb", [("b1", "Philips 60W equivalent LED bulb", "3"), ("b2", "LED strip light", "2.33"),
                        ("b3", "Ceiling fan with light kit", "1.67"), ("b4", "Lamp shade, linen", "1.33"),
                        ("b5", "Soft white LED bulb 4-pack", "2.67")]),
]


@pytest.fixture
def relevance_file(tmp_path):
    """Three hand-written queries in the Home Depot relevance JSONL format."""
    path = tmp_path / "relevance.jsonl"
    rows = [{"query_id": qid, "query": query,
             "candidates": [{"product_id": pid, "title": title, "brand": "", "color": "", "bullets": "", "description": "",
                             "label": label, "gain": float(label) / 3} for pid, title, label in cands]}
            for qid, query, cands in QUERIES]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_roles(tiny_model_dir):
    """(model, tokenizer) of the tiny random Llama, in eval mode."""
    from ptalign.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir))
    return model.eval(), tokenizer


def fake_generate(model, tokenizer, prompts, **kwargs):
    """The random tiny model greedily writes only whitespace: stand in a seller that writes text."""
    out = []
    for messages in prompts:
        query, product = (line.split(": ", 1)[1] for line in messages[1]["content"].splitlines()[:2])
        match = any(word in product.lower() for word in query.split())
        out.append("  It is what you searched for.\n" if match else "Not what you need.")
    return out


@pytest.fixture
def seller_writes_text(monkeypatch):
    monkeypatch.setattr("ptalign.models.generate", fake_generate)
