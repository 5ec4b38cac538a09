"""Types of the C pending-span record (jouled/attribution/_pending.c)."""

from typing import Any

class Pending:
    workload: str
    model: str
    route: str
    start: float
    end: float
    gflops: float | None
    input_tokens: int | None
    output_tokens: int | None
    energy_j: dict[str, float] | None
    done: bool
    dedup: int
    def __init__(self, span: Any, dedup: int = 0) -> None: ...

def live() -> int: ...
