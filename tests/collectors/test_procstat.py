"""The host's CPU times from /proc/stat, read from a kept descriptor (collectors/procstat.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jouled.collectors import procstat
from jouled.collectors.procstat import host_busy_s, host_cpu_times
from jouled.config import Config

HZ = os.sysconf("SC_CLK_TCK")


def _write(root: Path, user: int, idle: int) -> None:
    (root / "stat").write_text(f"cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4\n")


def test_each_read_sees_the_file_as_it_is_now(tmp_path: Path) -> None:
    _write(tmp_path, 100, 1000)
    assert host_cpu_times(tmp_path).busy_s == pytest.approx(100 / HZ)
    _write(tmp_path, 250, 1500)  # rewritten in place, as the kernel's file changes
    times = host_cpu_times(tmp_path)
    assert times.busy_s == pytest.approx(250 / HZ)
    assert times.total_s == pytest.approx(1750 / HZ)


def test_the_real_file_is_kept_open_and_read_again(tmp_path: Path) -> None:
    first = host_cpu_times()
    fd = procstat._kept[Path("/proc/stat")]
    second = host_cpu_times()
    assert procstat._kept[Path("/proc/stat")] == fd  # the same descriptor, read from offset 0
    assert second.total_s >= first.total_s > 0


def test_many_roots_are_read_without_keeping_descriptors(tmp_path: Path) -> None:
    roots = []
    for k in range(procstat._MAX_KEPT + 4):
        root = tmp_path / str(k)
        root.mkdir()
        _write(root, 10 * (k + 1), 100)
        roots.append(root)
    assert [host_cpu_times(r).busy_s for r in roots] == pytest.approx(
        [10 * (k + 1) / HZ for k in range(len(roots))]
    )
    assert len(procstat._kept) <= procstat._MAX_KEPT


def test_a_missing_or_wrong_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        host_cpu_times(tmp_path / "nowhere")
    assert host_busy_s(tmp_path / "nowhere") == 0.0
    (tmp_path / "stat").write_text("intr 1 2 3\n")
    with pytest.raises(ValueError, match="not the aggregate cpu line"):
        host_cpu_times(tmp_path)


def test_a_reader_that_accepts_an_age_shares_the_reading_of_the_same_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The estimate collector reads /proc/stat at the start of a tick; the process tracker and
    # the meters' frozen-counter checks, a few ms later, take that reading instead of making
    # the kernel render the whole file again (per CPU and per interrupt line).
    now = [1000.0]
    monkeypatch.setattr(procstat.time, "monotonic", lambda: now[0])
    reads: list[Path] = []
    real_first_line = procstat._first_line

    def counted(path: Path) -> bytes:
        reads.append(path)
        return real_first_line(path)

    monkeypatch.setattr(procstat, "_first_line", counted)
    fresh = host_cpu_times()  # the estimate: always a new read
    age = procstat.SHARED_MAX_AGE_S
    now[0] += age / 2
    assert host_cpu_times(max_age_s=age) is fresh
    assert host_busy_s(max_age_s=age) == fresh.busy_s
    assert len(reads) == 1
    now[0] += age  # older than the age accepted: read again (never the tick before's)
    assert host_cpu_times(max_age_s=age) is not fresh
    assert host_cpu_times() is not fresh  # no age accepted: read
    assert len(reads) == 3
    shortest = min(m.ge for m in Config.model_fields["interval"].metadata if hasattr(m, "ge"))
    assert age <= shortest / 2  # so a tick never takes the reading of the tick before
    # A directory standing in for /proc is read each time: its files change between calls.
    _write(tmp_path, 100, 1000)
    assert host_busy_s(tmp_path, max_age_s=60.0) == pytest.approx(100 / HZ)
    _write(tmp_path, 300, 1000)
    assert host_busy_s(tmp_path, max_age_s=60.0) == pytest.approx(300 / HZ)
