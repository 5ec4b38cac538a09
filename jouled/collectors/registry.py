"""One table of the energy collectors: name, config, factory and check (node_exporter's
``registerCollector``), with the one rule for ``enabled: true | false | auto``.

- ``false``: never built, and ``jouled check`` says "disabled in config".
- ``auto``: built where its source exists; an absent source (``HardwareAbsent``) or an
  unusable one is a start-up note, not an error. The estimate in ``auto`` runs only where
  no RAPL zone can be read.
- ``true``: required; a failure to build or to read stops the start-up (and a reload) with
  the collector's message and fix, and makes ``jouled check`` exit 1.

Stdlib and collectors only: ``jouled check`` imports this, never the daemon's service, so it
loads neither aiohttp nor the exporters.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jouled.clock import Clock
from jouled.collectors.base import CheckRow, CollectorError, EnergyCollector, HardwareAbsent
from jouled.collectors.procstat import SHARED_MAX_AGE_S, host_busy_s
from jouled.collectors.standby import Standby
from jouled.config import Config, Enabled


class RequiredCollectorFailed(Exception):
    """A collector with ``enabled: true`` cannot be built or read; the message says why."""


@dataclass(frozen=True, slots=True)
class Hardware:
    """What the factories read besides the config: injected for tests (a fake pynvml)."""

    nvml_module: Any | None = None  # None: import pynvml
    # jouled check: seconds between two reads of each RAPL zone (a frozen counter fails).
    motion_probe_s: float = 1.0


@dataclass(frozen=True, slots=True)
class CollectorSpec:
    """One row of the table.

    ``build`` may raise ``HardwareAbsent`` (no such source here) or ``CollectorError``
    (present but unusable); ``check`` never raises. ``probe``: read once at start-up, so that
    a present but unreadable source is told apart from a readable one (RAPL). ``auto_runs``
    decides, in ``auto``, from the names of the collectors found readable before it.
    """

    name: str
    title: str  # as the start-up notes name it
    enabled: Callable[[Config], Enabled]
    build: Callable[[Config, Clock, Hardware], EnergyCollector]
    check: Callable[[Config, Clock, Hardware], list[CheckRow]]
    running: Callable[[Config], str]  # the start-up note when it runs
    probe: bool = False
    auto_runs: Callable[[frozenset[str]], bool] = lambda _readable: True
    auto_skipped: str = ""  # the check row's detail when ``auto_runs`` says no
    # Whether its check rows show a working meter (what ``auto_runs`` of later rows sees).
    measures: Callable[[Sequence[CheckRow]], bool] = lambda rows: any(r.readable for r in rows)
    # In ``auto``, where ``auto_runs`` says no: held in reserve behind this collector, read
    # only while the returned callable gives a reason (its counters froze).
    stands_by_for: tuple[str, Callable[[EnergyCollector], Callable[[], str | None]]] | None = None


def _host_busy(cfg: Config) -> Callable[[], float]:
    """Host busy CPU seconds (/proc/stat under attribution.proc_path): a meter that does not
    move while the host works is frozen, not a measurement."""
    return functools.partial(host_busy_s, cfg.attribution.proc_path, max_age_s=SHARED_MAX_AGE_S)


def _build_rapl(cfg: Config, clock: Clock, _hw: Hardware) -> EnergyCollector:
    from jouled.collectors.rapl import RaplCollector

    rc = cfg.collectors.rapl
    return RaplCollector(
        rc.path, clock=clock, max_power_w=rc.max_power_watts, host_busy_s=_host_busy(cfg)
    )


def _check_rapl(cfg: Config, _clock: Clock, hw: Hardware) -> list[CheckRow]:
    from jouled.collectors.rapl import check_rapl

    return check_rapl(cfg.collectors.rapl.path, wait_s=hw.motion_probe_s)


def _rapl_measures(rows: Sequence[CheckRow]) -> bool:
    from jouled.collectors.rapl import FROZEN_FIX

    # A frozen zone measures nothing: the estimate covers it (the daemon's standby).
    return any(r.readable for r in rows) and not any(r.fix == FROZEN_FIX for r in rows)


def _rapl_frozen(rapl: EnergyCollector) -> Callable[[], str | None]:
    def reason() -> str | None:
        frozen: set[str] = getattr(rapl, "frozen_domains", set())
        if not frozen:
            return None
        return f"RAPL {', '.join(sorted(frozen))} frozen (not moving while the host is busy)"

    return reason


def _build_nvml(cfg: Config, clock: Clock, hw: Hardware) -> EnergyCollector:
    from jouled.collectors.nvml import NvmlCollector

    nc = cfg.collectors.nvml
    return NvmlCollector(
        hw.nvml_module,
        clock=clock,
        poll_interval_s=nc.poll_interval,
        max_power_w=nc.max_power_watts,
        host_busy_s=_host_busy(cfg),
    )


def _check_nvml(_cfg: Config, clock: Clock, hw: Hardware) -> list[CheckRow]:
    from jouled.collectors.nvml import check_nvml

    return check_nvml(hw.nvml_module, clock)


def _build_estimate(cfg: Config, clock: Clock, _hw: Hardware) -> EnergyCollector:
    from jouled.collectors.estimate import EstimateCollector

    ec = cfg.collectors.estimate
    return EstimateCollector(
        clock,
        cpu_min_watts_per_vcpu=ec.cpu_min_watts_per_vcpu,
        cpu_max_watts_per_vcpu=ec.cpu_max_watts_per_vcpu,
        memory_watts_per_gb=ec.memory_watts_per_gb,
        memory_gb_included_per_vcpu=ec.memory_gb_included_per_vcpu,
        proc_root=cfg.attribution.proc_path,
    )


def _check_estimate(cfg: Config, clock: Clock, hw: Hardware) -> list[CheckRow]:
    try:
        return _build_estimate(cfg, clock, hw).check()
    except CollectorError as exc:
        return [CheckRow("estimate", "-", False, str(exc.args[0]), exc.fix)]


def _estimate_note(cfg: Config) -> str:
    forced = cfg.collectors.estimate.enabled is True
    why = "forced by config" if forced else "no readable RAPL zone"
    return (
        f"estimate: CPU and memory power estimated from utilization ({why}); "
        'every estimated series is labelled source="estimate"'
    )


COLLECTORS: tuple[CollectorSpec, ...] = (
    CollectorSpec(
        "rapl",
        "RAPL",
        lambda cfg: cfg.collectors.rapl.enabled,
        _build_rapl,
        _check_rapl,
        lambda cfg: f"RAPL: reading zones under {cfg.collectors.rapl.path}",
        probe=True,
        measures=_rapl_measures,
    ),
    CollectorSpec(
        "nvml",
        "NVML",
        lambda cfg: cfg.collectors.nvml.enabled,
        _build_nvml,
        _check_nvml,
        lambda _cfg: "NVML: reading NVIDIA GPUs",
    ),
    CollectorSpec(
        "estimate",
        "estimate",
        lambda cfg: cfg.collectors.estimate.enabled,
        _build_estimate,
        _check_estimate,
        _estimate_note,
        auto_runs=lambda readable: "rapl" not in readable,
        auto_skipped="not needed: RAPL is readable (stands by: takes over if its counters freeze)",
        stands_by_for=("rapl", _rapl_frozen),
    ),
)


@dataclass
class CollectorPlan:
    """What ``build_collectors`` decided, with the reasons an operator reads at start-up."""

    collectors: list[EnergyCollector] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    readable: set[str] = field(default_factory=set)

    @property
    def rapl_readable(self) -> bool:
        return "rapl" in self.readable


def _require(spec: CollectorSpec, enabled: Enabled, failure: str) -> None:
    if enabled is True:
        raise RequiredCollectorFailed(
            f"collectors.{spec.name}.enabled is true but {failure}"
        ) from None


def build_collectors(
    cfg: Config,
    clock: Clock,
    *,
    hardware: Hardware | None = None,
    probe: bool = True,
    specs: Sequence[CollectorSpec] = COLLECTORS,
) -> CollectorPlan:
    """Instantiate the configured collectors, in table order.

    Raises ``RequiredCollectorFailed`` where a collector with ``enabled: true`` cannot be
    built or (with ``probe``) read.
    """
    hw = hardware or Hardware()
    plan = CollectorPlan()
    built: dict[str, EnergyCollector] = {}
    for spec in specs:
        enabled = spec.enabled(cfg)
        if enabled is False:
            continue
        if enabled == "auto" and not spec.auto_runs(frozenset(plan.readable)):
            if spec.stands_by_for is not None and spec.stands_by_for[0] in built:
                behind, needed = spec.stands_by_for
                try:
                    reserve = spec.build(cfg, clock, hw)
                except CollectorError as exc:
                    plan.notes.append(f"{spec.title}: cannot stand by for {behind}: {exc}")
                else:
                    plan.collectors.append(Standby(reserve, needed(built[behind])))
            continue
        try:
            collector = spec.build(cfg, clock, hw)
        except CollectorError as exc:
            _require(spec, enabled, str(exc))
            state = "not available" if isinstance(exc, HardwareAbsent) else "present but unusable"
            plan.notes.append(f"{spec.title}: {state}: {exc}")
            continue
        plan.collectors.append(collector)
        built[spec.name] = collector
        if spec.probe and probe:
            try:
                collector.read()
            except CollectorError as exc:
                _require(spec, enabled, f"{spec.title} cannot be read: {exc}")
                # Kept, so jouled_collector_up{collector=...} 0 tells the operator.
                plan.notes.append(f"{spec.title}: present but unreadable: {exc}")
                continue
        plan.readable.add(spec.name)
        plan.notes.append(spec.running(cfg))
    return plan


def check_collectors(
    cfg: Config,
    clock: Clock,
    *,
    hardware: Hardware | None = None,
    specs: Sequence[CollectorSpec] = COLLECTORS,
) -> list[CheckRow]:
    """``jouled check``'s rows for every collector in table order; never raises.

    A required collector's absent source is a failure (``absent`` cleared), an optional
    one's is not.
    """
    hw = hardware or Hardware()
    rows: list[CheckRow] = []
    readable: set[str] = set()
    for spec in specs:
        enabled = spec.enabled(cfg)
        if enabled is False:
            rows.append(CheckRow(spec.name, "-", True, "disabled in config"))
            continue
        if enabled == "auto" and not spec.auto_runs(frozenset(readable)):
            rows.append(CheckRow(spec.name, "-", True, spec.auto_skipped))
            continue
        found = spec.check(cfg, clock, hw)
        if spec.measures(found):
            readable.add(spec.name)
        if enabled is True:
            found = [dataclasses.replace(r, absent=False) if r.absent else r for r in found]
        rows.extend(found)
    return rows


def required_failures(
    cfg: Config, rows: Sequence[CheckRow], specs: Sequence[CollectorSpec] = COLLECTORS
) -> list[str]:
    """Collectors the config requires (``enabled: true``) that cannot read anything."""
    return [
        spec.name
        for spec in specs
        if spec.enabled(cfg) is True
        and not any(r.readable for r in rows if r.collector == spec.name)
    ]
