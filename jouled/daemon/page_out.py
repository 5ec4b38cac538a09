"""Hand back the library pages the daemon no longer runs (Linux ``MADV_PAGEOUT``).

A Python daemon maps ~300 file-backed regions: the interpreter, its extension modules and
their libraries. Start-up runs code the daemon never runs again (pydantic-core's validators
for the config, OpenSSL's set-up, module import machinery), and the kernel maps code in 64
KiB blocks around each page touched (fault-around), so after start-up ~33 MB of the gRPC
daemon's resident set are library pages, of which ~7 MB are touched in a steady minute
(``/proc/<pid>/smaps``' ``Referenced`` after ``clear_refs``: pydantic-core 3.7 MB resident,
none touched; OpenSSL's libcrypto 3.6 MB, 68 kB touched).

``page_out_libraries`` asks the kernel to reclaim the pages of every file-backed mapping that
is not writable (code and read-only data; never the heap, never a writable or shared data
mapping). The kernel reclaims only the pages no other process maps (``madvise(2)``:
MADV_PAGEOUT skips shared pages), and for a process without rights on the file only its
anonymous pages, which these mappings have none of. The pages the daemon still runs fault
back in, from the page cache or the disk, once: the resident set becomes the working set.
The daemon does it ``AFTER_S`` after start (the config read, the first ticks, scrapes and
export calls done), ``AFTER_S`` after each reload (which validates a config again), and
every ``EVERY_S``, for pages touched by rare paths since.

Measured on the gRPC daemon at 1,000 spans/s (``benchmarks.daemon_memory --transports grpc``;
the span sender on the same host maps grpcio and the interpreter too, so their shared pages
stay): ~31 MB of file pages before, ~26 MB after; 78.3 MB resident in minute 2, 73.7 MB in
minute 3, 74.0-74.5 MB from then on; 28 major faults in all. A second jouled on the host (or
any process mapping the same files) keeps those pages in both. Kernels before 5.4 do not
know the advice (EINVAL): the daemon then stops asking.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger(__name__)

MADV_PAGEOUT: Final = 21  # <asm-generic/mman-common.h>, Linux 5.4
AFTER_S: Final = 120.0
EVERY_S: Final = 3600.0


@functools.cache
def _madvise() -> Any | None:
    """libc's ``madvise`` with its argument types set; None off Linux or without it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def library_ranges(maps: str) -> list[tuple[int, int, str]]:
    """(start, length, path) of each mapping in ``maps`` (the text of ``/proc/<pid>/maps``)
    that maps a file and is not writable: the candidates for ``page_out_libraries``."""
    out: list[tuple[int, int, str]] = []
    for line in maps.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6 or "w" in fields[1] or not fields[5].startswith("/"):
            continue
        path = fields[5].strip()
        if path.endswith(" (deleted)"):
            continue  # replaced on disk (an upgrade): its pages could not be read back
        try:
            start, end = (int(x, 16) for x in fields[0].split("-"))
        except ValueError:
            continue
        if end > start:
            out.append((start, end - start, path))
    return out


def page_out_libraries(
    maps_path: str = "/proc/self/maps",
    advise: Callable[[int, int], int] | None = None,
) -> int | None:
    """Advise ``MADV_PAGEOUT`` on every mapping of ``library_ranges``. Returns the bytes
    advised (not all are reclaimed: see the module), or None where the advice is not
    available: not Linux, no ``madvise``, or a kernel that answered EINVAL for every mapping
    (before 5.4). One mapping's EINVAL alone is not that: a locked (``mlock``) or special
    mapping answers it too on any kernel, so it is skipped. ``advise(start, length)``: 0 or
    an errno (the real ``madvise`` by default; tests pass their own). Blocks for the
    kernel's reclaim (~1-10 ms): call it off the event loop."""
    if advise is None:
        madvise = _madvise()
        if madvise is None:
            return None

        def advise(start: int, length: int) -> int:
            return 0 if madvise(start, length, MADV_PAGEOUT) == 0 else ctypes.get_errno()

    try:
        with open(maps_path, encoding="utf-8", errors="replace") as fh:
            ranges = library_ranges(fh.read())
    except OSError:
        return None
    advised = refused = 0
    for start, length, _path in ranges:
        err = advise(start, length)
        if err == 0:
            advised += length
        elif err == errno.EINVAL:
            refused += 1
        # ENOMEM: unmapped since the read (a module unloaded); anything else: skip it.
    if advised == 0 and refused:
        return None  # EINVAL and nothing taken: the kernel does not know MADV_PAGEOUT
    return advised


class PageOut:
    """Runs ``page_out`` on a worker thread ``after_s`` after start, again ``after_s`` after
    each ``soon()`` and every ``every_s``; stops for good when it answers None."""

    def __init__(
        self,
        page_out: Callable[[], int | None] = page_out_libraries,
        *,
        after_s: float = AFTER_S,
        every_s: float = EVERY_S,
    ) -> None:
        self._page_out = page_out
        self._after_s = after_s
        self._every_s = every_s
        self._wake = asyncio.Event()
        self.runs = 0

    def soon(self) -> None:
        """Page out ``after_s`` from now (after a reload: its validation ran again)."""
        self._wake.set()

    async def run(self) -> None:
        await asyncio.sleep(self._after_s)
        while True:
            self._wake.clear()  # a reload from here on asks for the next round
            try:
                advised = await asyncio.to_thread(self._page_out)
            except Exception:
                log.exception("paging out library pages failed; trying again later")
                advised = 0
            self.runs += 1
            if advised is None:
                log.debug("no MADV_PAGEOUT here: library pages stay resident")
                return
            try:
                await asyncio.wait_for(self._wake.wait(), self._every_s)
            except TimeoutError:
                continue
            await asyncio.sleep(self._after_s)
