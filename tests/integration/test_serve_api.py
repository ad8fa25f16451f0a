"""`adaptloop serve` as a public API: a real server process (with a real broker and worker) answers
every request, valid or not, without a 5xx and as its OpenAPI document says (schemathesis generates
the requests from the served document), and refuses each known attack politely: a body too large
(413 before it is read), not JSON (415), malformed JSON, NaN, 100,000 levels of nesting or 10,000
features (422, with an excerpt of the input, never the whole input)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptloop.learners.spec import LearnerSpec

from .loop_helpers import Server, loop_settings, running_server, running_worker, wait_for

pytestmark = pytest.mark.kafka

MODEL = "churn"
BODY_LIMIT = 1_000_000  # the contracts' record limit: the default
SMALL_ANSWER = 2_000  # bytes: an error answer names the problem and an excerpt, whatever was sent


@pytest.fixture(scope="module")
def served(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`adaptloop serve` of one model (a worker publishes its first version), on a free port."""
    tmp_path = tmp_path_factory.mktemp("serve")
    spec = LearnerSpec(name=MODEL, recipe="logistic", min_examples=50, default_prediction=False)
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=1)
    with (
        running_worker(settings, tmp_path / "worker.log"),
        running_server(settings, tmp_path / "serve.log") as server,
    ):
        assert wait_for(server.healthy), server.log_file.read_text()
        yield server


def test_generated_requests_get_no_5xx_and_answers_as_documented(served: Server) -> None:
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.result import Ok
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{served.base}/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]
    strategies = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the served document is valid OpenAPI
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies.append(operation.as_strategy(generation_mode=mode))
            # the served model too, not only names it does not serve
            if "{model}" in operation.path:
                strategies.append(
                    operation.as_strategy(generation_mode=mode, path_parameters={"model": MODEL})
                )
    session, statuses = requests.Session(), []

    @settings(
        # about 10 s unloaded; bounded so that a loaded 2-core machine takes ~1-2 min
        max_examples=400,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def answers_as_documented(case) -> None:
        response = case.call_and_validate(
            base_url=served.base, session=session, checks=checks, timeout=30
        )
        statuses.append(response.status_code)

    answers_as_documented()
    assert not [s for s in statuses if s >= 500], served.log_file.read_text()
    # the generated requests reached every kind
    assert {200, 202, 404, 422} <= set(statuses), sorted(set(statuses))


def _refused(response: httpx.Response, status: int, error: str, says: str) -> dict:
    assert response.status_code == status, response.text[:SMALL_ANSWER]
    assert len(response.content) < SMALL_ANSWER, len(response.content)
    body = response.json()
    assert set(body) == {"error", "detail", "problems"} and body["error"] == error, body
    assert says in body["detail"], body
    return body


JSON = {"content-type": "application/json"}
PATHS = ("/v1/outcomes", f"/v1/models/{MODEL}:predict", "/v1/feedback")
BAD_BODIES = {  # name: (body, headers, status, error, what the detail says)
    "malformed": (b"{not json", JSON, 422, "InvalidJSON", "at byte 1"),
    "text/plain": (
        b"label=1",
        {"content-type": "text/plain"},
        415,
        "UnsupportedMediaType",
        "'text/plain'",
    ),
    "no content type": (b"{}", {}, 415, "UnsupportedMediaType", "not none"),
    "NaN": (
        b'{"decision_id": "d", "label": NaN, "features": {"x": NaN}}',
        JSON,
        422,
        "InvalidJSON",
        "NaN and",
    ),
    "Infinity": (
        b'{"decision_id": "d", "reward": -Infinity}',
        JSON,
        422,
        "InvalidJSON",
        "NaN and Infinity",
    ),
    "100,000 deep": (
        b"[" * 100_000 + b"]" * 100_000,
        JSON,
        422,
        "InvalidJSON",
        "nested deeper than 32",
    ),
    "10 MB": (
        b'{"decision_id": "' + b"x" * 10_000_000 + b'"}',
        JSON,
        413,
        "BodyTooLarge",
        "at most 1,000,000",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_a_bad_body_is_refused_on_every_route_with_a_short_answer(
    served: Server, case: str
) -> None:
    body, headers, status, error, says = BAD_BODIES[case]
    with httpx.Client(base_url=served.base, timeout=60) as http:
        for path in PATHS:
            _refused(http.post(path, content=body, headers=headers), status, error, says)
    assert "Exception in ASGI application" not in served.log_file.read_text()


def test_a_chunked_body_is_refused_once_past_the_limit_and_one_under_it_is_read(
    served: Server,
) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: 10 MB in chunks
        for _ in range(1000):
            yield b" " * 10_000

    with httpx.Client(base_url=served.base, timeout=60) as http:
        _refused(
            http.post("/v1/outcomes", content=chunks(), headers=JSON),
            413,
            "BodyTooLarge",
            "at most 1,000,000",
        )
        # Just under the limit is read (and refused by the contract, with an excerpt of the field).
        under = b'{"decision_id": "' + b"x" * (BODY_LIMIT - 100) + b'", "label": 1, "source": "s"}'
        body = _refused(
            http.post("/v1/outcomes", content=under, headers=JSON),
            422,
            "InvalidRequest",
            "decision_id",
        )
    assert body["problems"][0]["loc"] == ["body", "decision_id"]
    assert (
        body["problems"][0]["input"].startswith("'xxxx") and len(body["problems"][0]["input"]) <= 80
    )


def test_a_prediction_with_10000_features_is_refused_and_one_with_1000_served(
    served: Server,
) -> None:
    with httpx.Client(base_url=served.base, timeout=60) as http:
        many = {"features": {f"f{i}": float(i) for i in range(10_000)}}
        body = _refused(
            http.post(f"/v1/models/{MODEL}:predict", json=many),
            422,
            "InvalidRequest",
            "10,000 features",
        )
        assert (
            body["problems"][0]["loc"] == ["body", "features"]
            and "f0" in body["problems"][0]["input"]
        )
        fine = {"features": {f"f{i}": float(i) for i in range(1000)}}
        assert http.post(f"/v1/models/{MODEL}:predict", json=fine).status_code == 200


def test_refused_fields_routes_and_methods_answer_in_the_one_error_shape(served: Server) -> None:
    with httpx.Client(base_url=served.base, timeout=60) as http:
        body = _refused(
            http.post(
                "/v1/outcomes", json={"decision_id": "d", "label": [1] * 10_000, "source": "s"}
            ),
            422,
            "InvalidRequest",
            "body.label",
        )
        assert body["problems"][0]["input"] == "[1, 1, 1, 1, ...]"  # an excerpt, never the value
        _refused(
            http.post("/v1/models/nope:predict", json={"features": {}}),
            404,
            "UnknownModel",
            "serves no model",
        )
        _refused(http.get("/v1/nothing"), 404, "NotFound", "Not Found")
        _refused(http.put("/v1/outcomes", json={}), 405, "MethodNotAllowed", "Method Not Allowed")


def test_the_openapi_document_describes_the_errors_and_limits(served: Server) -> None:
    document = httpx.get(f"{served.base}/openapi.json", timeout=30).json()
    assert {"ErrorBody", "Problem"} <= set(document["components"]["schemas"])
    predict = document["paths"]["/v1/models/{model}:predict"]["post"]
    assert {"200", "404", "413", "415", "422", "503"} <= set(predict["responses"])
    for status in ("413", "415", "422"):
        schema = predict["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    features = predict["requestBody"]["content"]["application/json"]["schema"]["properties"][
        "features"
    ]
    assert features["maxProperties"] == 1000
    assert "1,000,000 bytes" in document["info"]["description"]
