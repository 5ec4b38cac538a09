"""``jouled check``: what each collector can read on this host, and how to fix what it can't."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from jouled.clock import Clock
from jouled.collectors.base import CheckRow
from jouled.collectors.registry import Hardware, check_collectors
from jouled.collectors.server_http import check_rows
from jouled.config import Config


def collect_rows(
    cfg: Config, clock: Clock, nvml_module: Any | None = None, *, motion_probe_s: float = 1.0
) -> list[CheckRow]:
    """Every row of ``jouled check``: the registry's collectors, then the workloads' server
    metrics. RAPL zones are read twice ``motion_probe_s`` apart, so a frozen counter (one
    that does not move) shows as FAIL rather than as a meter."""
    hardware = Hardware(nvml_module=nvml_module, motion_probe_s=motion_probe_s)
    rows = check_collectors(cfg, clock, hardware=hardware)
    rows.extend(check_rows(cfg.workloads))
    rows.extend(model_config_rows(cfg.spans.model_configs))
    rows.extend(_process_rows(cfg, clock, nvml_module))
    return rows


MODEL_CONFIG = "model_config"


def model_config_rows(model_configs: Mapping[str, Path]) -> list[CheckRow]:
    """One row per ``spans.model_configs`` entry: what the daemon will charge for a request
    of 512 prompt and 128 generated tokens, or why it will not start."""
    from jouled.costmodel.configjson import ConfigError, load_model_config
    from jouled.costmodel.decoder import DECODERS, RequestWork, decoder_shape, parameters

    rows = []
    for model, path in sorted(model_configs.items()):
        target = f"{model} {path}"
        try:
            config = load_model_config(path)
            shape = decoder_shape(config)
            gflops = RequestWork.from_config(config)(512, 128)
        except ConfigError as exc:
            kinds = ", ".join(DECODERS)
            fix = f"give spans.model_configs[{model!r}] a decoder's config.json ({kinds})"
            rows.append(CheckRow(MODEL_CONFIG, target, False, str(exc), fix))
            continue
        total, active = parameters(shape)
        size = f"{total / 1e9:,.2f} B parameters" + (
            f" ({active / 1e9:,.2f} B active)" if active != total else ""
        )
        detail = f"{shape.model_type}, {size}; 512 + 128 tokens: {gflops:,.1f} GFLOPs"
        rows.append(CheckRow(MODEL_CONFIG, target, True, detail))
    return rows


def _process_rows(cfg: Config, clock: Clock, nvml_module: Any | None) -> list[CheckRow]:
    """The proc root, each workload's processes, and GPU processes jouled cannot see."""
    from jouled.attribution.matchers import tracker_for
    from jouled.attribution.visibility import check_processes
    from jouled.collectors.base import CollectorError
    from jouled.collectors.nvml import NvmlCollector

    gpu_pids: dict[int, list[int]] = {}
    if cfg.collectors.nvml.enabled is not False:
        try:
            nvml = NvmlCollector(nvml_module, clock, start_poller=False)
        except CollectorError:
            pass  # its rows above say why
        else:
            try:
                gpu_pids = {i: list(p) for i, p in nvml.gpu_processes().items()}
            finally:
                nvml.close()
    return check_processes(tracker_for(cfg), cfg.attribution.proc_path, gpu_pids)


def status(row: CheckRow) -> str:
    """The STATUS column: ok, absent (optional, nothing to read here) or FAIL."""
    if row.readable:
        return "ok"
    return "absent" if row.absent else "FAIL"


def render(rows: list[CheckRow], out: TextIO) -> None:
    headers = ("COLLECTOR", "TARGET", "STATUS", "DETAIL")
    table = [(r.collector, r.target, status(r), r.detail) for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers[:3])]
    line = "  ".join(h.ljust(w) for h, w in zip(headers[:3], widths, strict=False))
    out.write(f"{line}  {headers[3]}\n")
    for row, t in zip(rows, table, strict=True):
        head = "  ".join(v.ljust(w) for v, w in zip(t[:3], widths, strict=False))
        out.write(f"{head}  {t[3]}\n")  # whole: a detail cut short could drop its advice
        if not row.readable and row.fix:
            # An absent optional source needs nothing; the line says what to do if one was expected.
            what = "if expected" if row.absent else "fix"
            out.write(f"{'':>{len(head)}}  {what}: {row.fix}\n")
    if any(r.absent for r in rows):
        out.write(
            "absent: optional (enabled: auto) and not on this host: not an error, nothing to do\n"
        )
