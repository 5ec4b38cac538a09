"""``benchmarks.daemon_memory``'s breakdown of a process's resident memory by mapping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._util import rss_mb
from benchmarks.daemon_memory import (
    MEMHOOK_DIR,
    _hook_rows,
    _inside_change,
    parse_smaps,
    smaps_breakdown,
)

SMAPS = """\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 1234  /usr/bin/python3.11
Size:               1024 kB
Rss:                 512 kB
55d0c2000000-55d0c4000000 rw-p 00000000 00:00 0     [heap]
Size:              32768 kB
Rss:                4096 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                1024 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0     [anon:glibc arena]
Rss:                2048 kB
7f1000000000-7f1000800000 r-xp 00000000 08:01 99    /venv/lib/cygrpc.cpython-311.so
Rss:                3072 kB
7f1000800000-7f1000900000 r--p 00800000 08:01 99    /venv/lib/cygrpc.cpython-311.so
Rss:                1024 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0     [stack]
Rss:                 128 kB
7ffc00100000-7ffc00102000 r-xp 00000000 00:00 0     [vdso]
Rss:                   8 kB
"""


def test_each_mapping_is_counted_once_by_kind() -> None:
    b = parse_smaps(SMAPS.splitlines(keepends=True))
    assert b["file"] == pytest.approx(4.5)  # 0.5 + 3 + 1
    assert b["heap"] == pytest.approx(4.0)
    assert b["anon"] == pytest.approx(3.0)  # unnamed and named anonymous mappings
    assert b["stack"] == pytest.approx(0.125, abs=0.01)  # rounded to 10 kB
    assert b["other"] == pytest.approx(8 / 1024, abs=0.01)
    assert b["anon_mappings"] == 2
    assert b["files"] == {"cygrpc.cpython-311.so": 4.0, "python3.11": 0.5}


def test_the_kinds_of_a_real_process_add_up_to_its_rss() -> None:
    b = smaps_breakdown(os.getpid())
    total = sum(b[k] for k in ("file", "heap", "anon", "stack", "other"))
    assert total == pytest.approx(rss_mb(os.getpid()), abs=1.0)
    assert b["file"] > 1 and b["anon_mappings"] > 0
    assert "python" in " ".join(b["files"]) or "libpython" in " ".join(b["files"])


def _hooked(tmp_path: Path, code: str) -> list[dict[str, object]]:
    out = tmp_path / "hook.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": str(MEMHOOK_DIR),
        "JOULED_MEMHOOK_OUT": str(out),
        "JOULED_MEMHOOK_S": "0.2",
    }
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    return _hook_rows(out)


def test_the_hook_reports_the_daemons_heap_from_inside(tmp_path: Path) -> None:
    rows = _hooked(
        tmp_path,
        "import time, jouled.daemon.service\nclass Probe: pass\n"
        "keep = [Probe() for _ in range(50_000)]\n"
        "time.sleep(1.0)",
    )
    assert len(rows) >= 2
    row = rows[-1]
    assert row["types"]["Probe"] >= 50_000  # type: ignore[index]
    assert row["gc_objects"] >= 50_000  # type: ignore[operator]
    assert row["pymalloc"]["arenas"] >= 1  # type: ignore[index]
    assert row["pymalloc"]["allocated_bytes"] > 50_000 * 16  # type: ignore[index]
    assert row["mallinfo2"]["arena"] > 0  # type: ignore[index]
    assert rows[-1]["t_s"] > rows[0]["t_s"]  # type: ignore[operator]
    before = {**row, "types": {k: v for k, v in row["types"].items() if k != "Probe"}}  # type: ignore[attr-defined]
    assert f"Probe +{row['types']['Probe']}" in _inside_change(before, row)  # type: ignore[index]


def test_the_hook_stays_quiet_in_other_processes(tmp_path: Path) -> None:
    assert _hooked(tmp_path, "import time\ntime.sleep(0.6)") == []


def test_the_hook_times_the_collections(tmp_path: Path) -> None:
    rows = _hooked(
        tmp_path,
        "import gc, time, jouled.daemon.service\ntime.sleep(0.5)\n"
        "for _ in range(3):\n    gc.collect(0)\ngc.collect()\ntime.sleep(0.5)",
    )
    last = rows[-1]["gc"]
    assert last["0"]["count"] >= 3 and last["2"]["count"] >= 1  # type: ignore[index]
    assert last["2"]["max_ms"] > 0  # type: ignore[index]
