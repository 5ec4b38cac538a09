"""jouled/ingest/_otlpscan.c: the C span scanner (see jouled/ingest/otlpscan.py)."""

from typing import Any

_SpanTuple = tuple[bytes, bytes, bytes, int, int, int, str, bool, dict[str, Any] | None]

def scan_scope(data: bytes | memoryview, wanted: frozenset[str], /) -> list[_SpanTuple]: ...
def scan_span(data: bytes | memoryview, wanted: frozenset[str], /) -> _SpanTuple: ...
