"""``jouled check`` for RAPL: one row per zone, read twice to catch frozen and mirrored
counters; never raises."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from jouled.collectors.base import CheckRow
from jouled.collectors.powercap import (
    ABSENT_FIX,
    DEFAULT_ROOT,
    FROZEN_FIX,
    FROZEN_KINDS,
    MIRROR_TOLERANCE_UJ,
    PERMISSION_FIX,
    Zone,
    describe_oserror,
    read_sysfs_text,
    scan_tree,
)


def check_rapl(
    root: Path = DEFAULT_ROOT,
    read_text: Callable[[Path], str] | None = None,
    *,
    wait_s: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[CheckRow]:
    """One row per zone under ``root`` for ``jouled check``; never raises.

    A function as well as a method, so ``jouled check`` can report an absent tree (where
    the collector's constructor raises ``HardwareAbsent``). With ``wait_s`` > 0 every
    readable zone is read again after that long: a package, dram or psys counter that has
    not moved is frozen (a real one moves by joules every second, even idle), and a zone
    whose counter equals another's is a mirror, counted once.
    """
    reader = read_text if read_text is not None else read_sysfs_text
    try:
        scan = scan_tree(Path(root), reader)
    except Exception as exc:  # check() reports; it never raises
        return [CheckRow("rapl", "-", False, f"cannot scan {root}: {exc}", ABSENT_FIX)]
    if not scan.any_entry:
        return [
            CheckRow(
                "rapl", "-", False, f"no RAPL powercap zones under {root}", ABSENT_FIX, absent=True
            )
        ]
    rows: list[CheckRow] = []
    for entry, problem in sorted(scan.problems.items()):
        rows.append(CheckRow("rapl", str(Path(root) / entry), False, problem, _fix_for(problem)))
    used = [(z, None) for z in scan.zones] + [(z, msr) for z, msr in scan.duplicates]
    first: dict[int, int] = {}  # row index -> raw value, for the zones counted
    for zone, duplicate_of in used:
        row, raw = _check_zone(zone, duplicate_of, reader)
        if raw is not None and duplicate_of is None:
            first[len(rows)] = raw
        rows.append(row)
    if wait_s > 0 and first:
        sleep(wait_s)
        _probe_motion(
            rows,
            first=first,
            zones=[z for z, _ in used],
            offset=len(scan.problems),
            reader=reader,
            wait_s=wait_s,
        )
    return rows


def _probe_motion(
    rows: list[CheckRow],
    *,
    first: dict[int, int],
    zones: list[Zone],
    offset: int,
    reader: Callable[[Path], str],
    wait_s: float,
) -> None:
    """Second read of each counted zone: flag frozen counters and mirrored zones in place."""
    second: dict[int, int] = {}
    for i in first:
        try:
            text = reader(zones[i - offset].energy_path).strip()
        except OSError:
            continue
        if text.isascii() and text.isdigit():
            second[i] = int(text)
    seen: list[int] = []
    for i, raw in sorted(second.items()):
        zone, row = zones[i - offset], rows[i]
        if raw == first[i]:
            if zone.kind in FROZEN_KINDS:
                rows[i] = replace(
                    row,
                    readable=False,
                    detail=f"{row.detail}; energy_uj did not move in {wait_s:g} s: frozen, "
                    "not a measurement",
                    fix=FROZEN_FIX,
                )
            continue
        twin = next(
            (
                j
                for j in seen
                if zones[j - offset].kind is zone.kind
                and zones[j - offset].device == zone.device
                and abs(second[j] - raw) <= MIRROR_TOLERANCE_UJ
                and abs(first[j] - first[i]) <= MIRROR_TOLERANCE_UJ
            ),
            None,
        )
        if twin is not None:
            rows[i] = replace(
                row,
                detail=f"{row.detail}; same counter as {zones[twin - offset].base}: one meter, "
                "counted once",
            )
        else:
            seen.append(i)


_DRIVER_FIX = "the kernel driver failed this read; check dmesg for intel_rapl errors"


def _fix_for(problem: str) -> str:
    return PERMISSION_FIX if "EACCES" in problem or "EPERM" in problem else _DRIVER_FIX


def _check_zone(
    zone: Zone, duplicate_of: Zone | None, reader: Callable[[Path], str]
) -> tuple[CheckRow, int | None]:
    target = str(zone.path)
    label = f"{zone.base} ({zone.zone_id})"
    if duplicate_of is not None:
        label += f", duplicate of {duplicate_of.zone_id}, not counted"
    if zone.error is not None:
        row = CheckRow("rapl", target, False, f"{label}: {zone.error}", _fix_for(zone.error))
        return row, None
    path = zone.energy_path
    try:
        text = reader(path).strip()
    except PermissionError:
        row = CheckRow(
            "rapl", target, False, f"{label}: permission denied reading {path}", PERMISSION_FIX
        )
        return row, None
    except OSError as exc:
        row = CheckRow(
            "rapl", target, False, f"{label}: {describe_oserror(exc, path)}", _DRIVER_FIX
        )
        return row, None
    if not (text.isascii() and text.isdigit()):
        row = CheckRow(
            "rapl",
            target,
            False,
            f"{label}: unparseable {path}: {text[:40]!r}",
            "the kernel returned garbage; check dmesg for intel_rapl errors",
        )
        return row, None
    if zone.max_range_uj is None:
        detail = (
            f"{label}, max_energy_range_uj reads 0: counted anyway, wraps unfolded as a "
            "32-bit energy-status counter"
        )
    else:
        detail = f"{label}, max range {zone.max_range_uj // 1_000_000} J"
    return CheckRow("rapl", target, True, detail), int(text)
