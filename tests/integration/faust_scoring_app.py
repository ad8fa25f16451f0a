"""A faust app that scores orders with a loop model, as a team's service would (run by
test_faust_app.py): ``python -m tests.integration.faust_scoring_app worker``. Settings: the loop's
ADAPTLOOP_* and the FAUST_* below."""

from __future__ import annotations

import os

import faust

from adaptloop.faust import LoopModel

env = os.environ
app = faust.App(
    env["FAUST_APP_ID"],
    broker=f"kafka://{env['FAUST_BROKER']}",
    store="memory://",
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    topic_replication_factor=1,
    broker_session_timeout=10.0,
)
model = LoopModel(app, env["FAUST_MODEL"])
orders = app.topic(env["FAUST_ORDERS"], key_serializer="raw", value_serializer="json")
answers = app.topic(env["FAUST_ANSWERS"], key_serializer="raw", value_serializer="json")


@app.agent(orders)
async def score(stream):
    await model.ready()
    async for order in stream:
        answer = model.predict(order["features"], decision_id=order["id"])
        model.outcome(order["id"], label=order["label"], source="faust-app")
        await answers.send(
            key=order["id"].encode(),
            value={
                "decision_id": answer.decision_id,
                "version": answer.model_version,
                "fallback": answer.fallback,
            },
        )


if __name__ == "__main__":
    app.main()
