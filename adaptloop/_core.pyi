"""Type stubs of adaptloop._core, the compiled core (the Rust crate in core/)."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

# core/src/contract.rs: events decoded and validated with the JSON Schema their contract exports
class ContractError(ValueError):
    """args: (kind, path, message); kind is empty, too_large, malformed, missing or invalid."""

class Contract:
    def __init__(
        self,
        schema: str,
        event: type | None = None,
        complete: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        defaults: list[tuple[str, bytes | None]] | None = None,
    ) -> None: ...
    def decode(self, data: bytes | None, max_bytes: int) -> dict[str, Any]: ...
    def decode_event(self, data: bytes | None, max_bytes: int) -> Any: ...
    def encode_valid(self, data: bytes | None, max_bytes: int, now: float) -> bytes: ...

# -- the join (core/src/join) ----------------------------------------------------------------------

JOIN_MAX_JOINABLE_BYTES: int

class JoinTable:
    """The join's entries by decision_id, noting per partition which changed (``JoinState`` wraps it)."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: str) -> bool: ...
    def keys(self) -> list[str]: ...
    def get(self, key: str) -> dict[str, Any] | None: ...
    def partition_of(self, key: str) -> int | None: ...
    def set(self, key: str, entry: Mapping[str, object]) -> None: ...
    def delete(self, key: str) -> bool: ...
    def restore(self, key: str, entry: Mapping[str, object] | None) -> None: ...
    def take_changes(self, partition: int) -> dict[str, Any]: ...
    def take_change_records(self, partition: int) -> list[tuple[bytes, bytes | None]]: ...
    def drop_partition(self, partition: int) -> None: ...

_Examples = list[tuple[str, str, bytes]]
_Rejections = list[tuple[str | None, bytes | None, str | tuple[str, float], int | None, bool]]
_Output = tuple[_Examples, _Rejections]

class JoinCore:
    """The join's rules over a ``JoinTable`` (``DelayedJoin`` wraps it)."""

    def __init__(
        self,
        specs: list[tuple[str, float, bool, bytes | None, bytes | None]],
        default_horizon: float,
        late_retention: float,
        lateness: float,
        outcomes_last: bool,
        label_problem: Callable[[str, bytes, bytes], str | None],
    ) -> None: ...
    def on_prediction(
        self,
        table: JoinTable,
        key: str,
        model: str,
        json: bytes,
        problem: str | None,
        partition: int,
    ) -> _Output: ...
    def on_outcome(
        self,
        table: JoinTable,
        key: str,
        json: bytes,
        partition: int,
        offset: int | None,
        sent_on: bool,
    ) -> _Output: ...
    def tick(self, table: JoinTable, partition: int, now: float, clocks: list[int]) -> _Output: ...
    def use_contracts(
        self,
        predictions: Contract,
        outcomes: Contract,
        feature_problem: Callable[[str, bytes], str | None],
    ) -> None: ...
    def set_feature_rules(
        self, model: str, rules: tuple[bool, dict[str, str] | None] | None
    ) -> None: ...
    def process_raw(
        self,
        table: JoinTable,
        messages: Sequence[Any],
        start: int,
        topics: tuple[str, str, str, str],
        partitions: int,
        now: float,
        max_future: float,
        max_bytes: int,
    ) -> tuple[
        int,
        list[tuple[int, bytes, bytes]],
        list[tuple[str, str, int]],
        list[tuple[Any, ...]],
        list[tuple[str, int, int, int]],
    ]: ...
    def set_spec(
        self,
        model: str,
        spec: tuple[float, bool, bytes | None, bytes | None] | None,
        default_horizon: float,
    ) -> None: ...
    def forget(self, partition: int) -> None: ...
    def latest(self, partition: int) -> float | None: ...
    def counts(self) -> dict[str, int]: ...
