"""Schema-driven fuzzing: schemathesis generates requests from the app's own OpenAPI, valid ones
(positive) and ones that break the schema (negative), against a real uvicorn server.

Required: no 5xx, ever. Also run: schemathesis' default checks (responses match the documented
status codes, content types and schemas; schema-violating requests are rejected, where a 413
for oversize input counts as a rejection), except "schema-valid data is accepted": the server
also rejects what JSON Schema cannot say (repeated product ids, both ``candidates`` and
``catalog``), with a 422 that says so.

(schemathesis' ``pytest.from_fixture`` fails under pytest 9, so each operation's Hypothesis
strategy is driven by hand inside one ordinary test.)
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the fuzz test needs schemathesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402 - hypothesis comes with schemathesis
from schemathesis.checks import negative_data_rejection, positive_data_acceptance  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

from serve_helpers import running_server  # noqa: E402

EXAMPLES = 30  # per operation and mode


def test_no_request_gets_a_5xx_and_responses_match_the_schema(make_tiny_app):
    with running_server(make_tiny_app(max_new_tokens=2)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} == {"/v1/rank", "/v1/generate", "/health"}
        seen: dict[str, dict[int, int]] = {}
        for operation in operations:
            for mode in GenerationMode:
                if mode is GenerationMode.NEGATIVE and operation.path == "/health":
                    continue  # no parameters and no body: nothing to break
                counts = seen.setdefault(f"{operation.method.upper()} {operation.path} {mode.value}", {})

                @given(case=operation.as_strategy(mode))
                @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck))
                def conforms(case):
                    response = case.call()
                    counts[response.status_code] = counts.get(response.status_code, 0) + 1
                    assert response.status_code < 500, (
                        f"{case.method} {case.path} body={case.body!r} -> {response.status_code} {response.text}"
                    )
                    excluded = [positive_data_acceptance]
                    if response.status_code == 413:  # oversize is rejected with 413, which schemathesis
                        excluded.append(negative_data_rejection)  # does not count as a rejection
                    case.validate_response(response, excluded_checks=excluded)

                conforms()
    print("status codes:", seen)
    assert seen["POST /v1/rank positive"].get(200) and seen["POST /v1/rank negative"].get(422)
    assert seen["POST /v1/generate positive"].get(200)
