"""The daemon hands back the file pages it no longer runs (``daemon/page_out.py``): every
file mapping that is not writable, advised ``MADV_PAGEOUT``; what it still reads comes back
once, the rest leaves its resident set."""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jouled.daemon.page_out import PageOut, library_ranges, page_out_libraries

MAPS = """\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 1234   /usr/bin/python3.11
55d0c0100000-55d0c0300000 r-xp 00100000 08:01 1234   /usr/bin/python3.11
55d0c0300000-55d0c0310000 rw-p 00300000 08:01 1234   /usr/bin/python3.11
55d0c2000000-55d0c4000000 rw-p 00000000 00:00 0      [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f1000000000-7f1000800000 r-xp 00000000 08:01 99     /venv/lib/cygrpc.so
7f1000900000-7f1000a00000 r-xp 00000000 08:01 98     /venv/lib/old.so (deleted)
7f2000000000-7f2000100000 rw-s 00000000 08:01 97     /var/lib/jouled/ledger.db-shm
7f3000000000-7f3000001000 r--s 00000000 08:01 96     /usr/lib/locale/archive with space
7ffc00100000-7ffc00102000 r-xp 00000000 00:00 0      [vdso]
"""


def test_only_file_mappings_that_are_not_writable_are_candidates() -> None:
    got = library_ranges(MAPS)
    assert [(hex(a), n, p) for a, n, p in got] == [
        ("0x55d0c0000000", 0x100000, "/usr/bin/python3.11"),
        ("0x55d0c0100000", 0x200000, "/usr/bin/python3.11"),
        ("0x7f1000000000", 0x800000, "/venv/lib/cygrpc.so"),
        ("0x7f3000000000", 0x1000, "/usr/lib/locale/archive with space"),
    ]


def _rss_kb(path: str) -> int:
    total, inside = 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            fields = line.split(None, 5)
            if fields and "-" in fields[0] and not fields[0].endswith(":"):
                inside = len(fields) > 5 and fields[5].strip() == path
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.fixture
def mapped_file() -> Iterator[tuple[str, mmap.mmap]]:
    """A 4 MiB file of this test's own (on disk beside the tests, not tmpfs: shmem pages
    cannot be paged out without swap), mapped read-only and read through."""
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        path = os.path.join(tmp, "pages.bin")
        with open(path, "wb") as fh:
            fh.write(os.urandom(4 << 20))
            fh.flush()
            os.fsync(fh.fileno())
        with open(path, "rb") as fh:
            m = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
        try:
            yield path, m
        finally:
            m.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_PAGEOUT is Linux's")
def test_pages_leave_the_resident_set_and_come_back_when_read(
    mapped_file: tuple[str, mmap.mmap],
) -> None:
    path, m = mapped_file
    total = sum(m[i] for i in range(0, len(m), 4096))  # every page read once
    before = _rss_kb(path)
    assert before >= 4000
    advised = page_out_libraries()
    if advised is None:
        pytest.skip("this kernel does not know MADV_PAGEOUT (Linux < 5.4)")
    assert advised >= 4 << 20
    assert _rss_kb(path) <= before // 10  # reclaimed: no other process maps them
    assert sum(m[i] for i in range(0, len(m), 4096)) == total  # the same bytes, read back
    assert _rss_kb(path) >= 4000


async def _until(cond: object, timeout_s: float = 5.0) -> float:
    """Wait until ``cond()`` holds; the seconds it took."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not cond():  # type: ignore[operator]
        assert loop.time() - t0 < timeout_s
        await asyncio.sleep(0.01)
    return loop.time() - t0


def test_the_daemon_pages_out_after_start_after_a_reload_and_stops_where_it_cannot() -> None:
    async def run() -> None:
        p = PageOut(lambda: 1, after_s=0.2, every_s=2.0)
        task = asyncio.create_task(p.run())
        assert await _until(lambda: p.runs == 1) >= 0.2  # after_s after start
        p.soon()
        took = await _until(lambda: p.runs == 2)
        assert 0.2 <= took < 1.9  # after_s after the reload, not every_s
        took = await _until(lambda: p.runs == 3)
        assert took >= 1.9  # then every_s
        task.cancel()

    asyncio.run(run())

    async def unsupported() -> None:
        p = PageOut(lambda: None, after_s=0.01, every_s=0.01)
        task = asyncio.create_task(p.run())
        await _until(task.done)
        await asyncio.sleep(0.1)
        assert p.runs == 1  # asked once, then never again

    asyncio.run(unsupported())


def test_one_mapping_that_refuses_does_not_stop_the_page_out(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(MAPS)
    python_code = 0x55D0C0000000

    def locked_first(start: int, length: int) -> int:
        # The first mapping locked (mlock): EINVAL on any kernel; the others taken.
        return errno.EINVAL if start == python_code else 0

    got = page_out_libraries(str(maps), advise=locked_first)
    assert got == 0x200000 + 0x800000 + 0x1000  # every other candidate advised

    gone = page_out_libraries(str(maps), advise=lambda start, length: errno.ENOMEM)
    assert gone == 0  # unmapped since the read: nothing advised, but the advice exists

    # A kernel before 5.4 refuses every mapping: no MADV_PAGEOUT, the daemon stops asking.
    assert page_out_libraries(str(maps), advise=lambda start, length: errno.EINVAL) is None
