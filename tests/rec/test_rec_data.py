import json

import pytest

from ptalign.rec.data import (
    DataFormatError,
    Product,
    demo_catalog_path,
    load_catalog,
    load_esci,
    load_relevance_jsonl,
)
from ptalign.registry import UnknownNameError


def write_lines(path, lines):
    path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")
    return path


def candidate(pid="1", label="2.33", **extra):
    return {"product_id": pid, "title": f"Product {pid}", "brand": "", "color": "", "bullets": "",
            "description": "", "label": label, "gain": 0.5, **extra}  # fmt: skip


# --- Home Depot (real files) ---------------------------------------------------------------


def test_homedepot_files_load_with_linear_gain(shared_data):
    folder = shared_data / "rec" / "homedepot"
    train, dev = load_relevance_jsonl(folder / "train.jsonl"), load_relevance_jsonl(folder / "dev.jsonl")
    assert (len(train), len(dev)) == (2000, 300)
    assert sum(len(q.candidates) for q in dev) == 2051
    assert sum(len(q.candidates) for q in train) == 14117
    first = dev[0].candidates[0]  # hd-q22527 "resin storage shed", rating 1.67
    assert (dev[0].query_id, dev[0].query) == ("hd-q22527", "resin storage shed")
    assert first.label == pytest.approx(1.67) and first.gain == pytest.approx(0.335)
    assert all(0.0 <= c.gain <= 1.0 for q in dev for c in q.candidates)
    assert {q.query_id for q in train}.isdisjoint(q.query_id for q in dev)


def test_homedepot_gain_from_file(shared_data):
    dev = load_relevance_jsonl(shared_data / "rec" / "homedepot" / "dev.jsonl", gain="file")
    assert dev[0].candidates[0].gain == pytest.approx(0.556667)


def test_gain_mappings(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [{"query_id": "q1", "query": "drill", "candidates": [candidate(label="3")]}])
    assert load_relevance_jsonl(path)[0].candidates[0].gain == 1.0
    assert load_relevance_jsonl(path, gain="rating")[0].candidates[0].gain == 3.0
    assert load_relevance_jsonl(path, gain="file")[0].candidates[0].gain == 0.5
    with pytest.raises(UnknownNameError, match="unknown gain mapping 'log'; known: file, linear, rating"):
        load_relevance_jsonl(path, gain="log")


# --- error paths name file:line and the field ----------------------------------------------


def test_invalid_json_names_file_and_line(tmp_path):
    good = {"query_id": "q1", "query": "drill", "candidates": [candidate()]}
    path = write_lines(tmp_path / "bad.jsonl", [good, "", '{"query_id": "q2",'])
    with pytest.raises(DataFormatError, match=rf"{path}:3: invalid JSON"):
        load_relevance_jsonl(path)


def test_missing_key_names_file_line_and_key(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [{"query_id": "q1", "candidates": []}])
    with pytest.raises(DataFormatError, match=rf"{path}:1: missing key 'query'"):
        load_relevance_jsonl(path)
    no_title = candidate()
    del no_title["title"]
    path = write_lines(tmp_path / "bad2.jsonl", [{"query_id": "q", "query": "x", "candidates": [candidate(), no_title]}])
    with pytest.raises(DataFormatError, match=rf"{path}:1: candidates\[1\]: missing key 'title'"):
        load_relevance_jsonl(path)


def test_bad_label_names_candidate_and_field(tmp_path):
    good = {"query_id": "q1", "query": "drill", "candidates": [candidate()]}
    bad = {"query_id": "q2", "query": "paint", "candidates": [candidate(), candidate("2", label="very")]}
    path = write_lines(tmp_path / "bad.jsonl", [good, bad])
    with pytest.raises(DataFormatError, match=rf"{path}:2: candidates\[1\]: 'label' should be a rating.*'very'"):
        load_relevance_jsonl(path)


# --- catalog ----------------------------------------------------------------------------------


def test_demo_catalog_loads():
    products = load_catalog(demo_catalog_path())
    assert 35 <= len(products) <= 50
    assert len({p.product_id for p in products}) == len(products)
    assert all(p.title for p in products)
    assert any("drill" in p.title.lower() for p in products) and any("faucet" in p.title.lower() for p in products)


def test_catalog_errors_name_file_and_line(tmp_path):
    path = write_lines(tmp_path / "cat.jsonl", [{"product_id": "a", "title": "A"}, {"product_id": "b"}])
    with pytest.raises(DataFormatError, match=rf"{path}:2: missing key 'title'"):
        load_catalog(path)
    path = write_lines(tmp_path / "dup.jsonl", [{"product_id": "a", "title": "A"}, {"product_id": "a", "title": "B"}])
    with pytest.raises(DataFormatError, match=rf"{path}:2: duplicate product_id 'a' \(first on line 1\)"):
        load_catalog(path)
    path = write_lines(tmp_path / "type.jsonl", [{"product_id": 7, "title": ["A"]}])
    with pytest.raises(DataFormatError, match=rf"{path}:1: 'title' should be str, got list"):
        load_catalog(path)


def test_product_text_skips_empty_fields():
    assert Product("1", "Drill").text() == "Drill"
    full = Product("1", "Drill", brand="DeWalt", color="Yellow", bullets="20V", description="Cordless.")
    assert full.text() == "Drill\nBrand: DeWalt\nColor: Yellow\n20V\nCordless."


# --- ESCI fixture with the real schema --------------------------------------------------------


def write_esci(tmp_path, labels=("E", "S", "C", "I")):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rows = [  # (example_id, query, query_id, product_id, locale, label, small, large, split)
        *[(i, "cordless drill", 7, f"B0{i}", "us", lab, 1, 1, "test") for i, lab in enumerate(labels)],
        (10, "cordless drill", 7, "B10", "us", "E", 0, 1, "test"),  # large version only
        (11, "paint roller", 8, "B11", "us", "E", 1, 1, "train"),  # other split
        (12, "taladro", 9, "B12", "es", "E", 1, 1, "test"),  # other locale
        (13, "paint roller", 3, "B11", "us", "S", 1, 1, "test"),
    ]
    columns = ["example_id", "query", "query_id", "product_id", "product_locale", "esci_label",
               "small_version", "large_version", "split"]  # fmt: skip
    examples = pd.DataFrame(rows, columns=columns)
    ids = [*(f"B0{i}" for i in range(len(labels))), "B10", "B11", "B12"]
    products = pd.DataFrame({
        "product_id": ids,
        "product_title": [f"Title {p}" for p in ids],
        "product_description": [None] * len(ids),
        "product_bullet_point": ["bullet"] * len(ids),
        "product_brand": ["Acme"] * len(ids),
        "product_color": [None] * len(ids),
        "product_locale": ["es" if p == "B12" else "us" for p in ids],
    })  # fmt: skip
    examples.to_parquet(tmp_path / "shopping_queries_dataset_examples.parquet")
    products.to_parquet(tmp_path / "shopping_queries_dataset_products.parquet")
    return tmp_path / "shopping_queries_dataset_examples.parquet", tmp_path / "shopping_queries_dataset_products.parquet"


def test_esci_round_trip_with_official_gains(tmp_path):
    examples, products = write_esci(tmp_path)
    queries = load_esci(examples, products)
    assert [(q.query_id, q.query) for q in queries] == [("7", "cordless drill"), ("3", "paint roller")]
    drill = queries[0]
    assert [c.product.product_id for c in drill.candidates] == ["B00", "B01", "B02", "B03"]
    assert [c.gain for c in drill.candidates] == [1.0, 0.1, 0.01, 0.0]
    assert [c.label for c in drill.candidates] == [3.0, 2.0, 1.0, 0.0]
    p = drill.candidates[0].product
    assert (p.title, p.brand, p.color, p.bullets, p.description) == ("Title B00", "Acme", "", "bullet", "")
    assert len(load_esci(examples, products, small_version=False)[0].candidates) == 5
    assert [q.query_id for q in load_esci(examples, products, split="train")] == ["8"]
    assert [q.query for q in load_esci(examples, products, locale="es")] == ["taladro"]


def test_esci_bad_label_and_missing_columns(tmp_path):
    examples, products = write_esci(tmp_path, labels=("E", "X"))
    with pytest.raises(DataFormatError, match=r"row 1 \(query_id 7, product_id B01\): esci_label .* got 'X'"):
        load_esci(examples, products)
    import pandas as pd

    pd.DataFrame({"query": ["q"]}).to_parquet(examples)
    with pytest.raises(DataFormatError, match=r"examples.parquet: missing columns \['query_id'"):
        load_esci(examples, products)


def test_file_gain_must_be_a_number(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [{"query_id": "q", "query": "x", "candidates": [candidate(gain="high")]}])
    with pytest.raises(DataFormatError, match=rf"{path}:1: candidates\[0\]: expected a number in 'gain', got 'high'"):
        load_relevance_jsonl(path, gain="file")
