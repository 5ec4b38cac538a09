"""The real daemon's resident memory over minutes at a steady span rate: what
``benchmarks.daemon_cpu``'s 30 s window (40-70 s after start) cannot see.

Structures that fill over a longer horizon than the settle delay (the per-(workload, model)
energy-per-GFLOP window of ``spans.window``, 300 s by default) and the allocators'
fragmentation keep raising RSS for minutes after that window closes. This runs
``benchmarks.daemon_cpu``'s loaded daemon (1 s tick, 10 workloads, 200 of ~1,000 host
processes, 50 models, the real OpenTelemetry SDK sending) once per transport, side by side,
for ``--minutes``, and reads each daemon's VmRSS every second: the largest value of each
minute, and the largest after the fifth (by then the default ``spans.window`` has filled);
and once a minute where it is (``smaps_breakdown``: files, heap, other anonymous memory).

    .venv/bin/python -m benchmarks.daemon_memory                     # 12 minutes (~13 in all)
    .venv/bin/python -m benchmarks.daemon_memory --minutes 3 --transports grpc
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from benchmarks._util import daemon, exit_on_sigterm, rss_mb, save, sleepers
from benchmarks.daemon_cpu import GROUPS, YOUNG_S, _log, _sender, loaded_config

# VmRSS every second: the daemon trims its heap every 10 s (malloc_tuning.HEAP_TRIM_S), so
# a 10 s period would read it at one phase of that cycle only (the pass-21 runs did, ~1 MB
# below the peaks a 1 s reading saw). The mapping breakdown once a minute (~5 ms a read).
SAMPLE_S = 1.0
FILLED_AFTER_MIN = 5  # spans.window's default (300 s) has filled
TOP_FILES = 8


def smaps_breakdown(pid: int | str) -> dict[str, Any]:
    """Where a process's resident memory is, from ``/proc/<pid>/smaps`` (MB): ``file`` (pages
    of mapped files: code and data of the interpreter and its extension modules, clean and
    shared, which the kernel can drop and read again), ``heap`` (glibc's main arena, the brk
    heap), ``anon`` (other anonymous mappings: Python's object arenas, glibc's other
    arenas, mmapped blocks of 128 KiB and more), ``stack`` and ``other`` (vdso, vvar);
    ``anon_mappings`` counts the anonymous mappings, ``files`` gives the files that hold the
    most (MB by path). Raises OSError when the process is gone."""
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as fh:
        return parse_smaps(fh)


def parse_smaps(lines: Iterable[str]) -> dict[str, Any]:
    """``smaps_breakdown`` of the lines of an smaps file."""
    sums = {"file": 0.0, "heap": 0.0, "anon": 0.0, "stack": 0.0, "other": 0.0}
    files: dict[str, float] = {}
    anon_mappings = 0
    kind, path = "other", ""
    for line in lines:
        first = line.split(None, 5)
        if first and "-" in first[0] and not first[0].endswith(":"):
            path = first[5].strip() if len(first) > 5 else ""
            if path.startswith("/"):
                kind = "file"
            elif path == "[heap]":
                kind = "heap"
            elif path.startswith("[stack"):
                kind = "stack"
            elif not path or path.startswith("[anon"):
                kind = "anon"
                anon_mappings += 1
            else:
                kind = "other"
        elif first and first[0] == "Rss:":
            mb = int(first[1]) / 1024
            sums[kind] += mb
            if kind == "file":
                files[path] = files.get(path, 0.0) + mb
    top = sorted(files.items(), key=lambda kv: -kv[1])[:TOP_FILES]
    return {
        **{k: round(v, 2) for k, v in sums.items()},
        "anon_mappings": anon_mappings,
        "files": {Path(k).name: round(v, 2) for k, v in top},
    }


MEMHOOK_DIR = Path(__file__).resolve().parent / "memhook"


@contextlib.contextmanager
def _inspected(out: Path | None) -> Iterator[None]:
    """Start the daemon within with ``benchmarks/memhook`` on its PYTHONPATH, writing to
    ``out`` (nothing changes when None); the environment is restored after, so the senders
    started next do not inherit it."""
    if out is None:
        yield
        return
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "JOULED_MEMHOOK_OUT")}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(MEMHOOK_DIR), saved["PYTHONPATH"]) if p
    )
    os.environ["JOULED_MEMHOOK_OUT"] = str(out)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _hook_rows(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def steady(
    minutes: float, rate: int, transports: list[str], inspect: bool = False
) -> dict[str, Any]:
    """Per transport: the largest RSS (MB) of each minute, and over the minutes after the
    fifth; with ``inspect``, the daemon's own view of its heap each minute
    (``benchmarks/memhook``)."""
    out: dict[str, Any] = {}
    hooks: dict[str, Path | None] = {}
    seconds = minutes * 60
    with sleepers(1000, groups=GROUPS, per_group=20), contextlib.ExitStack() as stack:
        _log(f"letting the host's processes age {YOUNG_S + 5:.0f} s")
        time.sleep(YOUNG_S + 5)
        pids: dict[str, int] = {}
        for transport in transports:
            cfg = loaded_config(None, rate)
            endpoint = cfg["ingest"]["grpc_listen" if transport == "grpc" else "listen"]
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            hooks[transport] = hook = tmp / "memhook.jsonl" if inspect else None
            with _inspected(hook):
                d = stack.enter_context(daemon(tmp, cfg))
            stack.enter_context(_sender(endpoint, transport, rate, seconds + 30))
            pids[transport] = d.pid
        by_minute: dict[str, list[float]] = {t: [] for t in transports}
        # Where the memory is, at the start of each minute.
        where: dict[str, list[dict[str, Any]]] = {t: [] for t in transports}
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            minute = int(elapsed // 60)
            for transport, pid in pids.items():
                rows = by_minute[transport]
                while len(rows) <= minute:
                    rows.append(0.0)
                rows[minute] = max(rows[minute], rss_mb(pid))
                parts = where[transport]
                if len(parts) <= minute:
                    parts.extend({} for _ in range(minute + 1 - len(parts)))
                    parts[minute] = smaps_breakdown(pid)
            if elapsed // 60 != (elapsed + SAMPLE_S) // 60:
                _log(
                    f"minute {minute + 1}: "
                    + ", ".join(f"{t} {by_minute[t][minute]:.1f} MB" for t in transports)
                )
            time.sleep(max(0.0, min(SAMPLE_S, seconds - (time.monotonic() - t0))))
        inside = {t: _hook_rows(hooks.get(t)) for t in transports}
    for transport, rows in by_minute.items():
        later = rows[FILLED_AFTER_MIN:]
        out[transport] = {
            "rss_mb_max_by_minute": [round(r, 1) for r in rows],
            "rss_mb_max_after_minute_5": round(max(later), 1) if later else None,
            "rss_mb_first_minute": round(rows[0], 1) if rows else None,
            "smaps_mb_by_minute": where[transport],
        }
        if inspect:
            out[transport]["inside_by_minute"] = inside[transport]
    return out


def _inside_change(a: dict[str, Any], b: dict[str, Any]) -> str:
    """What changed inside the daemon between two ``memhook`` rows, in words."""
    mb = 1024 * 1024
    ma, mb_ = a["mallinfo2"], b["mallinfo2"]
    pa, pb = a["pymalloc"], b["pymalloc"]
    grew = sorted(
        ((b["types"].get(k, 0) - a["types"].get(k, 0), k) for k in b["types"]), reverse=True
    )[:5]
    return (
        f"t {a['t_s']:.0f} -> {b['t_s']:.0f} s; glibc in use {ma['uordblks'] / mb:.1f} -> "
        f"{mb_['uordblks'] / mb:.1f} MB, free held {ma['fordblks'] / mb:.1f} -> "
        f"{mb_['fordblks'] / mb:.1f}, mmapped {ma['hblkhd'] / mb:.1f} -> {mb_['hblkhd'] / mb:.1f};"
        f" pymalloc arenas {pa.get('arenas')} -> {pb.get('arenas')}, in blocks "
        f"{pa.get('allocated_bytes', 0) / mb:.1f} -> {pb.get('allocated_bytes', 0) / mb:.1f} MB;"
        f" objects {a['gc_objects']} -> {b['gc_objects']}; most grown: "
        + ", ".join(f"{k} +{n}" for n, k in grew)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=12.0)
    p.add_argument("--rate", type=int, default=1000, help="spans/s")
    p.add_argument("--transports", default="grpc,http", help="grpc and/or http, side by side")
    p.add_argument(
        "--inspect",
        action="store_true",
        help="also record the daemon's own view of its heap each minute (benchmarks/memhook: "
        "glibc's mallinfo2, pymalloc's arenas, the GC's object counts; ~0.1 s a minute)",
    )
    args = p.parse_args()
    minutes = min(max(args.minutes, 1.0), 120.0)
    transports = [t for t in args.transports.split(",") if t in ("grpc", "http")]
    if not transports:
        sys.exit("--transports: grpc and/or http")
    results = {
        "minutes": minutes,
        "rate": args.rate,
        "inspect": args.inspect,
        "transports": steady(minutes, args.rate, transports, args.inspect),
    }
    for transport, r in results["transports"].items():
        print(
            f"{transport}: first minute {r['rss_mb_first_minute']} MB, "
            f"after minute 5 at most {r['rss_mb_max_after_minute_5']} MB; by minute "
            + " ".join(f"{x:.1f}" for x in r["rss_mb_max_by_minute"])
        )
        parts = r["smaps_mb_by_minute"]
        if parts:
            first, last = parts[0], parts[-1]
            print(
                f"  where (minute 1 -> {len(parts)}, MB): "
                + ", ".join(
                    f"{k} {first[k]:.1f} -> {last[k]:.1f}"
                    for k in ("file", "heap", "anon", "stack", "other")
                )
                + f"; {first['anon_mappings']} -> {last['anon_mappings']} anonymous mappings"
            )
        rows = r.get("inside_by_minute") or []
        if len(rows) >= 2:
            print("  inside:", _inside_change(rows[0], rows[-1]))
    print("saved", save("daemon_memory", results))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
