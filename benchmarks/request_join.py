"""What counting one request once and finding the sender cost on the span path.

1. The nested-span joiner (``attribution/requests.py``) in front of the splitter: CPU and
   memory per span with trace ids (none of them nested: the common case it must not slow
   much), against the splitter alone. In-process, one thread, tracemalloc for memory.
2. The sender lookup (``ingest/sender.py``) on this host's real /proc: one uncached search
   for a real loopback connection (``/proc/net/tcp{,6}`` and the fd links of N claimed
   processes, this process last, the worst case). It runs once per new connection, on the
   ingest pool, never on the event loop.

    .venv/bin/python -m benchmarks.request_join [--spans 50000] [--pids 200]
"""

from __future__ import annotations

import argparse
import os
import socket
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._util import save
from jouled.attribution.requests import RequestJoiner
from jouled.attribution.spans import Span, SpanSplitter
from jouled.clock import SystemClock
from jouled.ingest.sender import SenderLookup


def _spans(n: int) -> list[Span]:
    t0 = time.time()
    return [
        Span(
            f"w{i % 10}",
            "m",
            t0 + i * 1e-4,
            t0 + i * 1e-4 + 0.05,
            trace_id=f"{i:032x}",
            span_id=f"{i:016x}",
        )
        for i in range(n)
    ]


def _adder(kind: str) -> Callable[[Span], Any]:
    splitter = SpanSplitter(settle_seconds=30)
    return splitter.add_span if kind == "splitter" else RequestJoiner(splitter, memory_s=15).add


def join_cost(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    spans = _spans(n)
    for kind in ("splitter", "joiner", "splitter", "joiner"):  # twice: the second counts
        add = _adder(kind)
        c0 = time.process_time()
        for span in spans:
            add(span)
        out[f"{kind}_us_per_span"] = (time.process_time() - c0) / n * 1e6
    for kind in ("splitter", "joiner"):
        add = _adder(kind)
        tracemalloc.start()
        for span in spans:
            add(span)
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[f"{kind}_bytes_per_span"] = current / n
    return out


def sender_cost(n_pids: int, lookups: int = 20) -> dict[str, Any]:
    others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    pids = {pid: f"w{i % 10}" for i, pid in enumerate(others[:n_pids])}
    pids[os.getpid()] = "me"  # searched last
    lookup = SenderLookup(Path("/proc"), lambda: pids, SystemClock(), cache_s=0)
    lines = sum(len(Path(f"/proc/net/{name}").read_text().splitlines()) for name in ("tcp", "tcp6"))
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()),
    ):
        conn, _ = listener.accept()
        with conn:
            peer, local = conn.getpeername(), conn.getsockname()
            t0 = time.perf_counter()
            for _ in range(lookups):
                assert lookup.for_tcp(peer, local)() == "me"
            per = (time.perf_counter() - t0) / lookups
    return {"proc_net_tcp_lines": lines, "claimed_pids": len(pids), "ms_per_lookup": per * 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spans", type=int, default=50_000)
    p.add_argument("--pids", type=int, default=200)
    args = p.parse_args()
    join = join_cost(args.spans)
    print(
        f"joiner {join['joiner_us_per_span']:.2f} us/span vs splitter alone "
        f"{join['splitter_us_per_span']:.2f}; memory {join['joiner_bytes_per_span']:.0f} vs "
        f"{join['splitter_bytes_per_span']:.0f} B/span in flight"
    )
    sender = sender_cost(args.pids)
    print(
        f"sender lookup: {sender['ms_per_lookup']:.2f} ms uncached "
        f"({sender['claimed_pids']} claimed pids, {sender['proc_net_tcp_lines']} socket lines)"
    )
    print("saved", save("request_join", {"join": join, "sender": sender, "spans": args.spans}))


if __name__ == "__main__":
    main()
