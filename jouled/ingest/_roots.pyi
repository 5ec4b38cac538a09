"""Types of the C request selector (jouled/ingest/_roots.c)."""

from typing import Any

from jouled.attribution.spans import Span

def select_roots(
    tuples: list[tuple[Any, ...]],
    workload: str,
    resource_model: Any,
    default_model: str,
    plan: tuple[Any, ...],
    /,
) -> list[Span] | None: ...
def scan_roots(
    data: bytes | memoryview,
    workload: str,
    resource_model: Any,
    default_model: str,
    plan: tuple[Any, ...],
    /,
) -> tuple[list[Span], int] | None: ...
