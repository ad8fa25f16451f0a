"""Type stubs of adaptloop._core, the compiled core (the Rust crate in core/)."""

from typing import Any

# core/src/contract.rs: events decoded and validated with the JSON Schema their contract exports
class ContractError(ValueError):
    """args: (kind, path, message); kind is empty, too_large, malformed, missing or invalid."""

class Contract:
    def __init__(self, schema: str) -> None: ...
    def decode(self, data: bytes | None, max_bytes: int) -> dict[str, Any]: ...
