"""Types of the C pending-span record (jouled/attribution/_pending.c)."""

from collections.abc import Iterable
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
    @property
    def dedup(self) -> int: ...
    span_key: int
    parent_key: int
    def __init__(
        self, span: Any, dedup: int = 0, span_key: int = 0, parent_key: int = 0
    ) -> None: ...

def live() -> int: ...
def finish_all(
    splitter: Any,
    recs: Any,
    by_id: RecordIndex,
    count: dict[str, int],
    fifo: dict[str, Any],
    lanes: dict[str, Any],
    requests: list[Any],
    settled_type: type,
    /,
) -> None: ...

class IdIndex:
    """int64 key -> object (the request joiner's requests by trace key); a mapping without
    iteration."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: int) -> bool: ...
    def __getitem__(self, key: int) -> Any: ...
    def __setitem__(self, key: int, value: Any) -> None: ...
    def __delitem__(self, key: int) -> None: ...
    def get(self, key: int, default: Any = None) -> Any: ...
    def forget_lone(self, keys: Iterable[int], due: int, memory_s: float, /) -> int: ...

class RecordIndex(IdIndex):
    """Pending record by its own ``dedup`` (the splitter's index); 8 bytes a slot. Setting
    takes a Pending under its dedup only (TypeError, ValueError)."""

    def __getitem__(self, key: int) -> Pending: ...
    def __setitem__(self, key: int, value: Pending) -> None: ...

class TimeQueue:
    """Pending records by their start (``by_end`` False) or end: ``spans._TimeQueue``'s twin
    for compiled records, taken in the same order (time, then push order)."""

    def __init__(self, by_end: bool) -> None: ...
    def __len__(self) -> int: ...
    def push(self, rec: Pending, t: float, /) -> None: ...
    def take_through(self, t: float, /) -> list[Pending]: ...
    def take_before(self, t: float, /) -> list[Pending]: ...
    def drop_done(self) -> None: ...
