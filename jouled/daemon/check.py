"""``jouled check``: what each collector can read on this host, and how to fix what it can't."""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any, TextIO

from jouled.clock import Clock
from jouled.collectors.base import CheckRow
from jouled.config import Config
from jouled.ingest.server_metrics import check_rows


def collect_rows(
    cfg: Config, clock: Clock, nvml_module: Any | None = None, *, motion_probe_s: float = 1.0
) -> list[CheckRow]:
    """Every row of ``jouled check``. RAPL zones are read twice ``motion_probe_s`` apart, so a
    frozen counter (one that does not move) shows as FAIL rather than as a meter."""
    from jouled.collectors.nvml import check_nvml
    from jouled.collectors.rapl import FROZEN_FIX, check_rapl
    from jouled.daemon.service import estimate_collector

    rows: list[CheckRow] = []
    rc = cfg.collectors.rapl
    rapl_ok = False
    if rc.enabled is False:
        rows.append(CheckRow("rapl", "-", True, "disabled in config"))
    else:
        found = check_rapl(rc.path, wait_s=motion_probe_s)
        rows.extend(found)
        # A frozen zone measures nothing: the estimate covers it (the daemon's standby).
        rapl_ok = any(r.readable for r in found) and not any(r.fix == FROZEN_FIX for r in found)
    if cfg.collectors.nvml.enabled is False:
        rows.append(CheckRow("nvml", "-", True, "disabled in config"))
    else:
        rows.extend(check_nvml(nvml_module, clock))
    est = estimate_collector(cfg, clock, rapl_readable=rapl_ok)
    if est is not None:
        rows.extend(est.check())
    else:
        disabled = cfg.collectors.estimate.enabled is False
        why = (
            "disabled in config"
            if disabled
            else "not needed: RAPL is readable (stands by: takes over if its counters freeze)"
        )
        rows.append(CheckRow("estimate", "-", True, why))
    rows.extend(check_rows(cfg.workloads))
    required = {
        name
        for name, enabled in (("rapl", rc.enabled), ("nvml", cfg.collectors.nvml.enabled))
        if enabled is True
    }
    # Absent is only no failure where the collector is optional (enabled: auto).
    return [
        dataclasses.replace(r, absent=False) if r.absent and r.collector in required else r
        for r in rows
    ]


def status(row: CheckRow) -> str:
    """The STATUS column: ok, absent (optional, nothing to read here) or FAIL."""
    if row.readable:
        return "ok"
    return "absent" if row.absent else "FAIL"


def required_failures(cfg: Config, rows: list[CheckRow]) -> list[str]:
    """Collectors the config requires (``enabled: true``) that cannot read anything."""
    failed = []
    for name, enabled in (
        ("rapl", cfg.collectors.rapl.enabled),
        ("nvml", cfg.collectors.nvml.enabled),
    ):
        mine = [r for r in rows if r.collector == name]
        if enabled is True and not any(r.readable for r in mine):
            failed.append(name)
    return failed


def render(rows: list[CheckRow], out: TextIO) -> None:
    width = shutil.get_terminal_size((120, 20)).columns
    headers = ("COLLECTOR", "TARGET", "STATUS", "DETAIL")
    table = [(r.collector, r.target, status(r), r.detail) for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers[:3])]
    line = "  ".join(h.ljust(w) for h, w in zip(headers[:3], widths, strict=False))
    out.write(f"{line}  {headers[3]}\n")
    for row, t in zip(rows, table, strict=True):
        head = "  ".join(v.ljust(w) for v, w in zip(t[:3], widths, strict=False))
        out.write(f"{head}  {t[3]}"[: max(width, 200)] + "\n")
        if not row.readable and row.fix:
            # An absent optional source needs nothing; the line says what to do if one was expected.
            what = "if expected" if row.absent else "fix"
            out.write(f"{'':>{len(head)}}  {what}: {row.fix}\n")
    if any(r.absent for r in rows):
        out.write(
            "absent: optional (enabled: auto) and not on this host: not an error, nothing to do\n"
        )
