"""HTTP serving through the loop: `adaptloop serve` answers predictions with the current version,
takes outcomes, swaps to each new version by itself, and answers bad requests with a 4xx and the
reason."""

from __future__ import annotations

import pytest

from adaptloop.learners.spec import LearnerSpec

from .loop_helpers import loop_settings, running_server, running_worker, wait_for

pytestmark = pytest.mark.kafka

N = 600


def test_http_predictions_and_outcomes_go_through_the_loop_and_new_versions_serve_by_themselves(
    kafka_bootstrap, tmp_path
):
    spec = LearnerSpec(
        name="churn",
        recipe="logistic",
        min_examples=50,
        default_prediction=False,
        checkpoint_every=100,
        checkpoint_seconds=1,
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=2)
    with (
        running_worker(settings, tmp_path / "worker.log") as worker,
        running_server(settings, tmp_path / "serve.log") as server,
    ):
        http = server.http
        assert wait_for(server.healthy), server.log_file.read_text()
        first = http.get("/v1/models/churn").json()
        assert first["ready"] and first["examples_seen"] == 0
        # Nothing learned or served yet: no metric has a value (null, never 0.0).
        assert "production.Accuracy" in first["metrics"] and set(first["metrics"].values()) == {
            None
        }

        versions, fallbacks = set(), 0
        for i in range(N):
            features = {"tenure": float(i % 11), "spend": float(i % 7)}
            answer = http.post("/v1/models/churn:predict", json={"features": features})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            versions.add(body["model_version"])
            fallbacks += body["fallback"]
            outcome = {
                "decision_id": body["decision_id"],
                "label": i % 11 < 3,
                "source": "billing",
            }
            assert http.post("/v1/outcomes", json=outcome).status_code == 202
        assert fallbacks >= 1  # the model's default until 50 were learned

        # then versions (on a slow machine, maybe only after the 600)
        def served_by_a_version():
            answer = http.post(
                "/v1/models/churn:predict", json={"features": {"tenure": 1.0, "spend": 2.0}}
            )
            versions.add(answer.json()["model_version"])
            return not answer.json()["fallback"]

        assert wait_for(served_by_a_version)

        # Each new version serves by itself: the last one has learned every decision.
        def learned_all():
            info = http.get("/v1/models/churn").json()
            return info if info["examples_seen"] == N else None

        info = wait_for(learned_all)
        assert info, http.get("/v1/models/churn").json()
        worker.check_alive()
        answer = http.post(
            "/v1/models/churn:predict", json={"features": {"tenure": 1.0, "spend": 2.0}}
        )
        assert answer.json()["model_version"] == info["version"]
        # class keys as JSON text
        assert set(answer.json()["probabilities"]) == {"False", "True"}

        # Bad requests: a 4xx with the reason, never a 500.
        bad = [
            (
                "/v1/models/nope:predict",
                {"features": {"tenure": 1.0}},
                404,
                "serves no model",
            ),
            ("/v1/models/churn:predict", {"features": {"plan": "pro"}}, 422, "numbers"),
            ("/v1/models/churn:predict", {"feature": {}}, 422, "features"),
            (
                "/v1/models/churn:predict",
                {"features": {"x": 1.0}, "decision_id": "a\x00b"},
                422,
                "pattern",
            ),
            (
                "/v1/outcomes",
                {"decision_id": "d", "label": [1], "source": "s"},
                422,
                "label",
            ),
            ("/v1/feedback", {"kind": "thumbs"}, 422, "trace_id"),
        ]
        for path, payload, status, says in bad:
            response = http.post(path, json=payload)
            assert response.status_code == status and says in response.text, (
                path,
                response.text,
            )
        garbage = http.post(
            "/v1/outcomes",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert garbage.status_code == 422
        paths = http.get("/openapi.json").json()["paths"]
        assert {
            "/v1/models/{model}:predict",
            "/v1/outcomes",
            "/v1/feedback",
            "/v1/models",
        } <= set(paths)
        assert "adaptloop_serve_predict_seconds" in http.get("/metrics").text
    # the model's default, then learned versions
    assert "default" in versions and len(versions) >= 2
    assert info["version"] != first["version"]  # swapped to the newest by itself
