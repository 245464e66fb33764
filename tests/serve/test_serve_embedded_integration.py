"""The service on the real embedded SmolLM2-135M-Instruct: seller/buyer ranking and guarded chat."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_embedded_model_ranks_with_tailored_descriptions_and_answers():
    from fastapi.testclient import TestClient

    from ptalign.serve import ServeConfig, build_app
    from ptalign.serve.backends import llm_rec_available

    ranker = "llm" if llm_rec_available() else "bm25"
    app = build_app(ServeConfig(model="embedded", ranker=ranker, judge="keyword", guard="flag", max_new_tokens=24,
                                first_stage_k=4, request_timeout_s=600))  # a busy 2-core CPU
    with TestClient(app) as c:
        r = c.post("/v1/rank", json={"query": "cordless drill", "top_k": 4})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert 1 <= len(results) <= 4 and all(x["description"].strip() for x in results)
        assert [x["utility"] for x in results] == sorted((x["utility"] for x in results), reverse=True)
        answer = c.post("/v1/generate", json={"message": "How do I boil an egg?"}).json()
        assert answer["answer"].strip() and answer["verdict"]["judge"] == "keyword" and not answer["withheld"]
