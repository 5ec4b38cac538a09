"""The daemon's glibc malloc settings (jouled/daemon/malloc_tuning.py), checked in fresh
interpreters: mallinfo2 says whether a 256 KiB block came from its own mapping."""

from __future__ import annotations

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


def _probe(mode: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_large_blocks_keep_their_own_mapping_once_tuned() -> None:
    assert _probe("tuned") == "True 1"


def test_glibc_default_would_take_them_from_the_heap() -> None:
    # The setting matters: without it the same block is not mapped (the probe can fail).
    assert _probe("default") == "None 0"
