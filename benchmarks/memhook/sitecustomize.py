"""Where a running ``jouled run`` keeps its memory, from inside it: for diagnosis runs only
(``benchmarks.daemon_memory --inspect`` puts this directory on the daemon's PYTHONPATH and
sets ``JOULED_MEMHOOK_OUT``; nothing of it runs otherwise).

Every ``JOULED_MEMHOOK_S`` seconds (60 by default) a thread appends one JSON line to the file
``JOULED_MEMHOOK_OUT`` names:

- ``mallinfo2``: glibc's malloc state (bytes): ``arena`` (taken from the system by brk and
  arena heaps), ``hblkhd`` (in blocks mmapped one by one), ``uordblks`` (in use),
  ``fordblks`` (free but held), ``keepcost`` (releasable at the top of the heap);
- ``pymalloc``: Python's small-object allocator (``sys._debugmallocstats``): arenas of 1 MiB
  held, bytes in allocated and in free blocks;
- ``blocks``: ``sys.getallocatedblocks()``; ``threads``; ``gc_objects`` and the 25 most
  numerous types among them (``types``), and what the weak references among them point at
  and call back (``weakrefs``: ``referent type<-callback``; ``NoneType`` where the referent
  is gone: sqlite3's connection keeps up to 200 such references to its finished cursors);
- ``gc``: the collections since the hook started, per generation: how many, their total and
  longest time (ms), and the unreachable objects they found (``gc.callbacks``).

Processes that are not the daemon (the benchmark's senders share the environment) stop the
thread at once. Reading the GC's objects holds the GIL for ~50-100 ms a time.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import sys
import tempfile
import threading
import time
import weakref


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo2() -> dict[str, int]:
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _Mallinfo2
    m = fn()
    return {f[0]: int(getattr(m, f[0])) for f in _Mallinfo2._fields_}


def _pymalloc() -> dict[str, int]:
    """The figures of ``sys._debugmallocstats``, which writes to the C stderr: read back
    through a temporary file put in place of file descriptor 2 for the call."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    out: dict[str, int] = {}
    wanted = {
        "# arenas allocated current": "arenas",
        "# bytes in allocated blocks": "allocated_bytes",
        "# bytes in available blocks": "free_bytes",
    }
    for line in text.splitlines():
        key, _, value = line.partition("=")
        name = wanted.get(key.strip())
        if name is not None:
            out[name] = int(value.strip().replace(",", ""))
    return out


_GC = {g: {"count": 0, "ms": 0.0, "max_ms": 0.0, "collected": 0} for g in range(3)}
_gc_started: list[float] = []


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[:] = [time.perf_counter()]
        return
    if not _gc_started:
        return
    ms = (time.perf_counter() - _gc_started[0]) * 1000
    row = _GC[info["generation"]]
    row["count"] += 1
    row["ms"] += ms
    row["max_ms"] = max(row["max_ms"], ms)
    row["collected"] += info["collected"]


def _run(path: str, every_s: float) -> None:
    time.sleep(min(every_s, 30.0))
    if "jouled.daemon.service" not in sys.modules:
        return  # not the daemon
    gc.callbacks.append(_on_gc)
    t0 = time.monotonic()
    while True:
        objs = gc.get_objects()
        types = collections.Counter(type(o).__name__ for o in objs).most_common(25)
        refs = [o for o in objs if type(o) is weakref.ReferenceType]
        weak = collections.Counter(
            f"{type(r()).__name__}<-{getattr(r.__callback__, '__qualname__', None)}" for r in refs
        ).most_common(10)
        del refs
        n = len(objs)
        del objs
        row = {
            "t_s": round(time.monotonic() - t0, 1),
            "mallinfo2": _mallinfo2(),
            "pymalloc": _pymalloc(),
            "blocks": sys.getallocatedblocks(),
            "threads": threading.active_count(),
            "gc_objects": n,
            "types": dict(types),
            "weakrefs": dict(weak),
            "gc": {
                str(g): {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
                for g, r in _GC.items()
            },
        }
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        time.sleep(every_s)


_OUT = os.environ.get("JOULED_MEMHOOK_OUT")
if _OUT:
    threading.Thread(
        target=_run,
        args=(_OUT, float(os.environ.get("JOULED_MEMHOOK_S", "60"))),
        name="memhook",
        daemon=True,
    ).start()
