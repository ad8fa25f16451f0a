"""Faust apps as services of the loop: score events in-stream with a model's current version and log
the decisions and outcomes, in a few lines.

::

    import faust
    from adaptloop.faust import LoopModel

    app = faust.App("checkout", broker="kafka://localhost:9092")
    churn = LoopModel(app, "churn")  # the loop's settings: ADAPTLOOP_* or adaptloop.toml, as every client
    orders = app.topic("orders", value_serializer="json")

    @app.agent(orders)
    async def score(orders):
        await churn.ready()
        async for order in orders:
            answer = churn.predict(order["features"], decision_id=order["id"])  # logged as a PredictionEvent
            ...

    # wherever the outcome becomes known, in this app or another service:
    churn.outcome(order_id, label=True, source="billing")

The model follows ``model-updates`` on its own thread and swaps each new version in (a
:class:`~adaptloop.streams.model_client.ModelClient`); a prediction is a call into the model in
memory and a non-blocking send, so it runs on the event loop. The decisions and outcomes go through
adaptloop's producer (idempotent, murmur2-keyed), beside the app's own: they are logged at least
once, as by any service, and the join counts a repeated one once.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

from adaptloop.schemas.base import FeatureValue
from adaptloop.schemas.errors import NoModelYet
from adaptloop.schemas.inference import OutcomeEvent
from adaptloop.streams.connection import ClientSettings
from adaptloop.streams.model_client import ModelClient, Prediction
from adaptloop.streams.producer import EventProducer

if TYPE_CHECKING:
    import faust


class LoopModel:
    """One of the loop's models inside a faust app: connected when the app starts, closed when it
    stops."""

    def __init__(
        self,
        app: faust.App,
        model: str,
        settings: ClientSettings | None = None,
        *,
        wait: float = 60.0,
    ) -> None:
        self.model = model
        self.settings = settings if settings is not None else ClientSettings()
        self.wait = wait
        self._client: ModelClient | None = None
        self._producer: EventProducer | None = None
        self._connected: asyncio.Future[None] | None = None
        app.task(self._connect)
        app.on_before_shutdown.connect(self._close)

    async def _connect(self) -> None:
        """Make the client off the event loop (it waits for the model's first record)."""
        connected = self._future()
        try:
            self._producer = EventProducer.from_settings(self.settings)
            make = partial(
                ModelClient.from_settings,
                self.model,
                self.settings,
                producer=self._producer,
                wait=self.wait,
            )
            self._client = await asyncio.get_running_loop().run_in_executor(None, make)
            connected.set_result(None)
        except Exception as error:  # told to whoever awaits ready(), not lost in a task
            connected.set_exception(error)

    def _future(self) -> asyncio.Future[None]:
        if self._connected is None:
            self._connected = asyncio.get_running_loop().create_future()
        return self._connected

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until the model serves (raises what connecting raised: e.g. no such model in the
        loop)."""
        await asyncio.wait_for(asyncio.shield(self._future()), timeout)

    @property
    def client(self) -> ModelClient:
        """The model's client (its ``version``, ``contract``); :class:`NoModelYet` before the app
        has started it."""
        if self._client is None:
            raise NoModelYet(
                f"model {self.model!r} is still connecting: await ready() before "
                "the first prediction"
            )
        return self._client

    def predict(
        self, features: dict[str, FeatureValue], decision_id: str | None = None, **ids: Any
    ) -> Prediction:
        """Predict with the current version and log the decision (``ids``: ``tenant``, ``user_id``,
        ``session_id``); raises as :meth:`ModelClient.predict` does."""
        return self.client.predict(features, decision_id, **ids)

    def outcome(
        self,
        decision_id: str,
        *,
        label: Any = None,
        reward: float | None = None,
        source: str = "faust",
    ) -> None:
        """Log what happened to a decision (its label or reward)."""
        assert self._producer is not None, (
            "the app has not started this model yet: await ready() first"
        )
        self._producer.send(
            OutcomeEvent(decision_id=decision_id, label=label, reward=reward, source=source)
        )

    async def _close(self, *_: Any, **__: Any) -> None:
        if self._client is not None:
            self._client.close()
        if self._producer is not None:
            self._producer.flush()
