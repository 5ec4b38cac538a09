import subprocess
import sys
import threading
from pathlib import Path

import yaml

from jouled.testing.fake_powercap import FakePowercap


def run_check(tmp_path: Path, cfg: dict) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "jouled.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run(
        [sys.executable, "-m", "jouled", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_lists_every_zone_and_passes_when_rapl_is_readable(tmp_path: Path) -> None:
    fake = FakePowercap.typical_server(tmp_path / "sys", sockets=2)
    # Counters that move, as on hardware: check reads each zone twice to catch frozen ones.
    stop = threading.Event()
    mover = threading.Thread(target=fake.run_realtime, args=(stop, 0.05), daemon=True)
    mover.start()
    try:
        out = run_check(
            tmp_path,
            {"collectors": {"rapl": {"enabled": True, "path": str(fake.class_dir)}}},
        )
    finally:
        stop.set()
        mover.join(timeout=5)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["COLLECTOR", "TARGET", "STATUS", "DETAIL"]
    rapl_rows = [line for line in lines if line.startswith("rapl")]
    for domain in ("package-0", "package-1", "core-0", "dram-1"):
        assert any(domain in row and " ok " in row for row in rapl_rows), (domain, rapl_rows)
    # RAPL is readable, so no estimate is needed.
    assert any(line.startswith("estimate") and "not needed" in line for line in lines)


def test_check_fails_with_the_fix_when_a_required_collector_cannot_read(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run_check(tmp_path, {"collectors": {"rapl": {"enabled": True, "path": str(empty)}}})
    assert out.returncode == 1
    assert "FAIL" in out.stdout
    assert "fix:" in out.stdout
    assert "required collector(s) cannot read: rapl" in out.stdout


def test_check_on_this_vm_recommends_the_estimate_and_exits_0(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run_check(tmp_path, {"collectors": {"rapl": {"path": str(empty)}}})
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert any(line.startswith("estimate") and " ok " in line for line in lines)
    # Absent and optional (enabled: auto): says so, no FAIL, and the fix is an action.
    rapl = next(line for line in lines if line.startswith("rapl"))
    assert rapl.split()[:3] == ["rapl", "-", "absent"], rapl
    nvml = next(line for line in lines if line.startswith("nvml"))
    assert nvml.split()[:3] == ["nvml", "-", "absent"], nvml
    assert "FAIL" not in out.stdout and "fix:" not in out.stdout
    hint = lines[lines.index(rapl) + 1].strip()
    assert hint.startswith("if expected: on bare metal, load the powercap RAPL driver: modprobe")
    assert "unavailable" not in hint and "no RAPL" not in hint
    assert lines[-1].startswith("absent: optional (enabled: auto)")


def test_check_status_absent_only_where_optional(tmp_path: Path) -> None:
    from jouled.clock import SystemClock
    from jouled.config import validate
    from jouled.daemon.check import collect_rows, status

    empty = tmp_path / "empty"
    empty.mkdir()
    auto = validate({"collectors": {"rapl": {"path": str(empty)}, "nvml": {"enabled": False}}}, "t")
    [rapl] = [r for r in collect_rows(auto, SystemClock()) if r.collector == "rapl"]
    assert status(rapl) == "absent"
    required = validate(
        {"collectors": {"rapl": {"enabled": True, "path": str(empty)}, "nvml": {"enabled": False}}},
        "t",
    )
    [rapl] = [r for r in collect_rows(required, SystemClock()) if r.collector == "rapl"]
    assert status(rapl) == "FAIL"


def test_check_loads_neither_aiohttp_nor_the_exporters_nor_the_service(tmp_path: Path) -> None:
    fake = FakePowercap.typical_server(tmp_path / "sys", sockets=1)
    path = tmp_path / "jouled.yaml"
    path.write_text(yaml.safe_dump({"collectors": {"rapl": {"path": str(fake.class_dir)}}}))
    script = (
        "import contextlib, io, sys\n"
        "from jouled.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = main(['check', '--config', {str(path)!r}])\n"
        "heavy = ('aiohttp', 'jouled.exporter', 'jouled.daemon.service', 'jouled.pipeline')\n"
        "print(code, sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.strip() == "0 []", out.stdout + out.stderr


def test_a_required_collector_failing_at_start_is_the_collectors_message_and_fix(
    tmp_path: Path,
) -> None:
    import pytest

    from jouled import config
    from jouled.clock import FakeClock
    from jouled.collectors.registry import Hardware, RequiredCollectorFailed, build_collectors
    from jouled.testing.fake_pynvml import FakeNvml

    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = config.validate(
        {"collectors": {"rapl": {"path": str(empty)}, "nvml": {"enabled": True}}}, "test"
    )
    import pynvml

    nvml = FakeNvml(init_error=pynvml.NVMLError_DriverNotLoaded)
    with pytest.raises(RequiredCollectorFailed, match=r"^collectors\.nvml\.enabled is true but"):
        build_collectors(cfg, FakeClock(), hardware=Hardware(nvml_module=nvml))
    # The same failure with enabled: auto is a note; the estimate stands in for RAPL.
    auto = config.validate({"collectors": {"rapl": {"path": str(empty)}}}, "test")
    plan = build_collectors(auto, FakeClock(), hardware=Hardware(nvml_module=nvml))
    assert [c.name for c in plan.collectors] == ["estimate"]
    assert plan.notes[0].startswith("RAPL: not available: ")
    assert plan.notes[1].startswith("NVML: ")


def test_a_long_detail_is_printed_whole_beside_a_wide_target() -> None:
    """A server_metrics URL widens TARGET; the proc row's advice must still end in full
    (it was cut at 200 characters, mid-sentence: "(hostPID, or the host's")."""
    import io

    from jouled.collectors.base import CheckRow
    from jouled.daemon.check import render

    advice = (
        "95 processes; PID 1 is process_api: a container's PID namespace? Workloads in other "
        "containers are invisible (hostPID, or the host's /proc as attribution.proc_path)"
    )
    rows = [
        CheckRow("server_metrics", "inference http://127.0.0.1:18080/metrics", True, "ok"),
        CheckRow("proc", "/proc", True, advice),
    ]
    out = io.StringIO()
    render(rows, out)
    proc_line = out.getvalue().splitlines()[2]
    assert proc_line.endswith("(hostPID, or the host's /proc as attribution.proc_path)")
    assert len(proc_line) > 200
