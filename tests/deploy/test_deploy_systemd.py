"""The systemd artefacts, checked by systemd's own tools.

``systemd-analyze verify`` parses the unit as systemd would load it; ``systemd-analyze
security --offline`` scores its sandbox (0 = fully locked down, 10 = unprotected).
systemd-tmpfiles and systemd-sysusers run against a fake root to prove the non-root path.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from jouled.config import DEFAULT_CONFIG
from tests.deploy.tools import DEPLOY, require_tool

SYSTEMD = DEPLOY / "systemd"
UNIT = SYSTEMD / "jouled.service"
MAX_EXPOSURE = 4.5


@pytest.fixture(scope="module")
def analyze() -> str:
    return require_tool("systemd-analyze", debian_package="systemd")


def directives(path: Path) -> dict[str, list[str]]:
    """Key -> values in file order (systemd keys may repeat, e.g. SystemCallFilter=)."""
    found: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def installable_copy(unit: Path, dest: Path) -> Path:
    """The unit with ExecStart pointed at an existing binary, as verify checks the path."""
    dest.mkdir(parents=True, exist_ok=True)
    text = unit.read_text(encoding="utf-8")
    text, count = re.subn(r"(?m)^ExecStart=/usr/local/bin/jouled ", "ExecStart=/bin/true ", text)
    assert count == 1, "ExecStart line not found where the test expects it"
    out = dest / unit.name
    out.write_text(text, encoding="utf-8")
    return out


def verify(analyze: str, unit: Path) -> str:
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    return f"rc={result.returncode}\n{result.stdout}{result.stderr}".strip()


def exposure(analyze: str, unit: Path) -> float:
    result = subprocess.run(
        [analyze, "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no exposure level in output:\n{result.stdout}{result.stderr}"
    return float(match.group(1))


def test_unit_verifies_without_any_warning(analyze: str, tmp_path: Path) -> None:
    unit = installable_copy(UNIT, tmp_path)
    assert verify(analyze, unit) == "rc=0"


def test_verify_reports_bad_directives_here(analyze: str, tmp_path: Path) -> None:
    # Guards the test above: this systemd-analyze does print warnings for a broken unit
    # (it exits 0 on unknown keys, so "no output" is the only meaningful pass criterion).
    unit = installable_copy(UNIT, tmp_path)
    unit.write_text(unit.read_text() + "ProtectProc=bogus\nNoSuchKey=1\n", encoding="utf-8")
    output = verify(analyze, unit)
    assert "ProtectProc" in output
    assert "NoSuchKey" in output


def test_security_exposure_is_at_most_4_5(analyze: str, tmp_path: Path) -> None:
    score = exposure(analyze, installable_copy(UNIT, tmp_path))
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}"


def test_user_dropin_verifies_and_lowers_exposure(analyze: str, tmp_path: Path) -> None:
    plain = exposure(analyze, installable_copy(UNIT, tmp_path / "plain"))
    unit = installable_copy(UNIT, tmp_path / "user")
    dropin_dir = unit.parent / "jouled.service.d"
    dropin_dir.mkdir()
    shutil.copy(SYSTEMD / "jouled-user.conf", dropin_dir / "user.conf")
    assert verify(analyze, unit) == "rc=0"
    assert exposure(analyze, unit) < plain


def test_unit_has_the_contracted_service_settings() -> None:
    d = directives(UNIT)
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["WatchdogSec"] == ["30"]
    assert d["Restart"] == ["on-failure"]
    assert d["ExecStart"] == ["/usr/local/bin/jouled run --config /etc/jouled/config.yaml"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["StateDirectory"] == ["jouled"]
    assert d["UMask"] == ["0077"]


def test_hardening_keeps_what_jouled_needs() -> None:
    d = directives(UNIT)
    # No capability: root reads its own 0400 energy_uj as the owner.
    assert d["CapabilityBoundingSet"] == [""]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"]
    # Attribution reads other processes' /proc entries.
    assert d["ProtectProc"] == ["default"]
    assert d["ProcSubset"] == ["all"]
    # NVML opens /dev/nvidia*: a device allow-list instead of PrivateDevices.
    assert "PrivateDevices" not in d
    assert d["DevicePolicy"] == ["closed"]
    assert any(v.startswith("char-nvidia") for v in d["DeviceAllow"])
    assert d["SystemCallFilter"][0] == "@system-service"
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX AF_NETLINK"]
    for key in (
        "ProtectHome",
        "PrivateTmp",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RestrictRealtime",
        "RestrictSUIDSGID",
    ):
        assert d[key] == ["yes"], key
    assert d["MemoryMax"] and d["CPUQuota"]
    # Room for both listeners' connection caps plus files (issue 13: 1,024 was exhausted by
    # idle ingest sockets and /metrics stopped answering).
    cfg = DEFAULT_CONFIG.connections
    assert int(d["LimitNOFILE"][0]) >= 4 * (cfg.max_ingest + cfg.max_metrics)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group needs root")
def test_sysusers_and_tmpfiles_grant_the_jouled_group_read(tmp_path: Path) -> None:
    sysusers = require_tool("systemd-sysusers", debian_package="systemd")
    tmpfiles = require_tool("systemd-tmpfiles", debian_package="systemd")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    zones = ["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:1"]
    for zone in zones:
        zone_dir = root / "sys/class/powercap" / zone
        zone_dir.mkdir(parents=True)
        (zone_dir / "energy_uj").write_text("123456\n")
        # The kernel's mode since the CVE-2020-8694 fix.
        (zone_dir / "energy_uj").chmod(0o400)
        (zone_dir / "name").write_text("package-0\n")
    subprocess.run(
        [sysusers, f"--root={root}", str(SYSTEMD / "jouled.sysusers")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    groups = dict(
        (line.split(":")[0], int(line.split(":")[2]))
        for line in (root / "etc/group").read_text().splitlines()
    )
    assert "jouled" in groups
    subprocess.run(
        [tmpfiles, f"--root={root}", "--create", str(SYSTEMD / "jouled-powercap.conf")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    for zone in zones:
        st = (root / "sys/class/powercap" / zone / "energy_uj").stat()
        assert stat.S_IMODE(st.st_mode) == 0o440, zone
        assert st.st_gid == groups["jouled"], zone
        # Only energy_uj is touched.
        name_st = (root / "sys/class/powercap" / zone / "name").stat()
        assert name_st.st_gid != groups["jouled"]


def test_udev_rule_matches_the_tmpfiles_grant() -> None:
    rules = [
        line
        for line in (SYSTEMD / "99-jouled-powercap.rules").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(rules) == 1
    pairs = [p.strip() for p in rules[0].split(",")]
    key_op_value = re.compile(r'([A-Z_]+(?:\{[^}]*\})?)\s*(==|!=|\+=|=|:=)\s*"([^"]*)"')
    parsed = [key_op_value.fullmatch(p) for p in pairs]
    assert all(parsed), f"unparsable udev key in {pairs}"
    keys = [(m.group(1), m.group(2), m.group(3)) for m in parsed if m]
    assert ("SUBSYSTEM", "==", "powercap") in keys
    assert ("ACTION", "==", "add") in keys
    runs = [value for key, op, value in keys if key == "RUN" and op == "+="]
    assert "/bin/chgrp jouled /sys%p/energy_uj" in runs
    assert "/bin/chmod 0440 /sys%p/energy_uj" in runs
    for command in runs:
        assert Path(command.split()[0]).exists(), command
    tmpfiles_line = next(
        line.split()
        for line in (SYSTEMD / "jouled-powercap.conf").read_text().splitlines()
        if line.startswith("z ")
    )
    assert tmpfiles_line[2:5] == ["0440", "root", "jouled"]
