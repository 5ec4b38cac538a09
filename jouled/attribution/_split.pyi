"""Types of the C tick split (jouled/attribution/_split.c)."""

from collections.abc import Sequence

def split_fractions(
    spans: Sequence[tuple[float, float, float, bool]], w0: float, w1: float, /
) -> tuple[float, list[float]] | None: ...
def fsum(values: list[float], /) -> float | None: ...
