"""Types of the tick's process clocks in C (jouled/attribution/_proctick.c)."""

from collections.abc import Container
from typing import TypeVar

P = TypeVar("P")

def to_read(procs: list[P], active: Container[int], /) -> list[tuple[P, int | None]]: ...
def cpu_ns(pid: int, /) -> int | None: ...
