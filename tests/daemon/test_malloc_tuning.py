"""The daemon's glibc malloc settings (jouled/daemon/malloc_tuning.py), checked in fresh
interpreters: mallinfo2 says whether a 256 KiB block came from its own mapping."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

_PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from jouled.daemon.malloc_tuning import tune_malloc

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.mallinfo2.restype = MallInfo2
    tuned = tune_malloc() if sys.argv[1] == "tuned" else None
    # glibc's default: freeing a mapped 1 MiB block raises the mmap threshold to 1 MiB...
    libc.free(libc.malloc(1 << 20))
    before = libc.mallinfo2().hblks
    block = libc.malloc(256 * 1024)
    # ...so a 256 KiB body (an SDK batch) then comes from the heap, unless tuned.
    print(tuned, libc.mallinfo2().hblks - before)
    libc.free(block)
    """
)


def _probe(mode: str, probe: str = _PROBE) -> str:
    out = subprocess.run(
        [sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_large_blocks_keep_their_own_mapping_once_tuned() -> None:
    assert _probe("tuned") == "True 1"


def test_glibc_default_would_take_them_from_the_heap() -> None:
    # The setting matters: without it the same block is not mapped (the probe can fail).
    assert _probe("default") == "None 0"


_THREAD_PROBE = textwrap.dedent(
    """
    import ctypes, sys, threading
    from jouled.daemon.malloc_tuning import tune_malloc

    libc = ctypes.CDLL(None)
    libc.malloc.restype = libc.sbrk.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.sbrk.argtypes = (ctypes.c_ssize_t,)
    tuned = tune_malloc() if sys.argv[1] == "tuned" else None
    heap_start = libc.sbrk(0)
    libc.malloc(64)  # the main thread's: the main arena, below the break
    got = []
    worker = threading.Thread(target=lambda: got.append(libc.malloc(64)))
    worker.start()
    worker.join()
    # A block from the main arena lies in the brk heap; one from an arena of the thread's own
    # lies in a mapping of its own, far from it.
    print(tuned, heap_start - (1 << 30) < got[0] < libc.sbrk(0))
    """
)


def test_threads_share_the_main_arena_once_tuned() -> None:
    assert _probe("tuned", _THREAD_PROBE) == "True True"


def test_glibc_default_would_give_a_thread_an_arena_of_its_own() -> None:
    assert _probe("default", _THREAD_PROBE) == "None False"


_TRIM_PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from jouled.daemon.malloc_tuning import trim_heap

    def rss_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
    # 40 MB of 2 KiB heap blocks, written; then all freed but every 64th, which keeps the
    # freed runs in the middle of the heap, where glibc's free() does not give pages back.
    blocks = [libc.malloc(2048) for _ in range(20_000)]
    for b in blocks:
        libc.memset(b, 1, 2048)
    for i, b in enumerate(blocks):
        if i % 64:
            libc.free(b)
    before = rss_kb()
    called = trim_heap() if sys.argv[1] == "trim" else None
    print(called, (before - rss_kb()) // 1024)
    """
)


def test_trim_heap_gives_back_free_pages_in_the_middle_of_the_heap() -> None:
    called, freed_mb = _probe("trim", _TRIM_PROBE).split()
    assert called == "True"
    assert int(freed_mb) >= 20, f"{freed_mb} MB given back of ~39 MB freed"


def test_without_the_trim_those_pages_stay_resident() -> None:
    # The probe can fail: the pages really stay until malloc_trim.
    called, freed_mb = _probe("keep", _TRIM_PROBE).split()
    assert called == "None" and int(freed_mb) <= 1


def test_the_daemon_trims_on_a_worker_thread_and_stops_where_it_cannot() -> None:
    import asyncio
    import threading

    from jouled.daemon.malloc_tuning import trim_heap_every

    calls: list[str] = []

    def fake(answer: bool) -> bool:
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise OSError("a failing call is logged, not fatal")
        return answer

    async def run(answer: bool) -> None:
        task = asyncio.create_task(trim_heap_every(0.01, lambda: fake(answer)))
        await asyncio.sleep(0.2)
        stopped = task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert stopped is (not answer)

    asyncio.run(run(True))
    assert len(calls) >= 5 and threading.main_thread().name not in calls
    calls.clear()
    asyncio.run(run(False))
    assert len(calls) == 1  # no glibc malloc_trim: asked once, then never again


def test_the_collection_runs_on_the_loop_before_each_trim_and_outlives_it() -> None:
    import asyncio
    import threading

    from jouled.daemon.malloc_tuning import trim_heap_every

    events: list[tuple[str, object, str]] = []

    def collect(round_: int) -> None:
        events.append(("collect", round_, threading.current_thread().name))
        if round_ == 2:
            raise RuntimeError("a failing collection is logged, not fatal")

    def trim() -> bool:
        events.append(("trim", None, threading.current_thread().name))
        return False  # no malloc_trim here: trimming stops, collecting goes on

    async def run() -> bool:
        task = asyncio.create_task(trim_heap_every(0.01, trim, collect=collect))
        await asyncio.sleep(0.2)
        running = not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return running

    assert asyncio.run(run())
    kinds = [e[0] for e in events]
    assert kinds[:3] == ["collect", "trim", "collect"] and kinds.count("trim") == 1
    rounds = [e[1] for e in events if e[0] == "collect"]
    assert rounds == list(range(1, len(rounds) + 1)) and len(rounds) >= 5
    main = threading.main_thread().name
    assert {e[2] for e in events if e[0] == "collect"} == {main}
    assert events[1][2] != main  # the trim on a worker thread
