"""The host's CPU times from /proc/stat, read from a kept descriptor (collectors/procstat.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jouled.collectors import procstat
from jouled.collectors.procstat import host_busy_s, host_cpu_times

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
