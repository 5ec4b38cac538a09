"""Live cost and carbon: each tick's measured energy turned into money and gCO2e.

Facility energy is IT energy times PUE (power usage effectiveness: what the building draws
per joule the servers draw). Emissions are facility kWh times the grid intensity (gCO2e per
kWh) in force at that tick; energy cost is facility kWh times the price per kWh in force;
hardware cost is an hourly price times time, charged to a workload by its share of the
energy of the component that hardware is (a GPU by GPU energy, the rest by CPU energy).
Counters accumulate tick by tick with the factors in force (time-matched accounting); the
$/h and gCO2e/h gauges use the power of the last ``window`` seconds and today's factors.

Stdlib only; it reads the tick and the attribution section from ``jouled.pipeline``.

Over 400 lines because the cost stage is one state machine (per-tick books, the window
behind the gauges, the ledger's deltas) over its running totals; the pure arithmetic is in
cost/books.py and cost/carbon.py.
"""

from __future__ import annotations

import logging
import math
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from jouled.config import CostConfig, GridFactorConfig, GridProviderConfig
from jouled.cost import embodied
from jouled.cost.books import CarbonAccount
from jouled.cost.carbon import Provenance, emissions_g, energy_cost, hour_of
from jouled.cost.server_books import ServerModelDeltas
from jouled.costmodel.fitfile import Fit
from jouled.costmodel.hardware import PRESETS
from jouled.pipeline.attribution import AttributionSnapshot
from jouled.pipeline.cost import Books, CostDelta, CostSnapshot, Factors, RequestBooks
from jouled.pipeline.server_metrics import ServerMetricsSnapshot
from jouled.pipeline.snapshot import Snapshot, frozen
from jouled.pipeline.tick import Tick

log = logging.getLogger(__name__)

SECONDS_PER_HOUR: Final = 3600.0
KIND_ENERGY: Final = "energy"
KIND_HARDWARE: Final = "hardware"
ESTIMATE: Final = "estimate"  # the source label of the estimate collector's energy
GPU_PRESETS: Final = frozenset(n.lower() for n in PRESETS if not n.startswith("thesis-"))


# --- the arithmetic (pure; the unit tests check it by hand) ---
def rate_per_hour(it_power_w: float, pue: float, per_kwh: float) -> float:
    """Grams or money per hour at a steady IT power: 100 W, PUE 1.5, 400 g/kWh -> 60 g/h."""
    return it_power_w / 1000.0 * pue * per_kwh


# --- where the grid intensity comes from ---
class IntensitySource(Protocol):
    """gCO2e/kWh in force at a time, and how old that value is (seconds)."""

    name: str

    def current(self, wall_s: float, mono_s: float) -> tuple[float, float]: ...

    def provenance(self, mono_s: float) -> Provenance | None:
        """The provenance of the value in force (None: the configured one's)."""
        ...


class StaticIntensity:
    """A configured number or hourly profile (hours of ``tz``): always fresh (age 0)."""

    name = "static"

    def __init__(self, value: float | tuple[float, ...], tz: str = "UTC") -> None:
        self.value = value
        self.tz = zoneinfo.ZoneInfo(tz)

    def current(self, wall_s: float, mono_s: float) -> tuple[float, float]:
        return hour_of(self.value, wall_s, self.tz), 0.0

    def provenance(self, mono_s: float) -> Provenance | None:
        return None


@dataclass(frozen=True, slots=True)
class HardwareItem:
    name: str
    per_hour: float  # per unit, in the energy price's currency
    count: int
    component: str  # cpu | dram | gpu | other | host
    embodied_g_per_s: float = 0.0  # all units, amortized over the lifetime

    @property
    def total_per_hour(self) -> float:
        return self.per_hour * self.count


def hardware_items(cfg: CostConfig) -> tuple[HardwareItem, ...]:
    """Config entries with preset prices filled in (config validation vouched for them)."""
    items = []
    for h in cfg.hardware:
        preset = next((p for n, p in PRESETS.items() if n.lower() == h.name.lower()), None)
        price = h.per_hour
        if price is None:
            # No price and no priced preset: an item for the carbon books only (validated).
            price = preset.price_per_hour_usd if preset is not None else None
            price = price or 0.0
        server = embodied.preset(h.name)
        default = "gpu" if h.name.lower() in GPU_PRESETS else "host" if server else "cpu"
        kg = h.embodied_kgco2e if h.embodied_kgco2e is not None else None
        years = h.lifetime_years
        if server is not None:
            kg = server.embodied_kgco2e if kg is None else kg
            years = server.lifetime_years if years is None else years
        g_per_s = embodied.amortized_g(kg, years, 1.0) * h.count if kg and years else 0.0
        items.append(HardwareItem(h.name, price, h.count, h.component or default, g_per_s))
    return tuple(items)


CostSink = Callable[[CostDelta], None]


@dataclass(slots=True)
class _WindowTick:
    t1: float
    seconds: float
    host_j: dict[str, float]  # component (and "host" for the sum)
    workload_j: dict[str, dict[str, float]]  # workload -> component (and "host")


def _summed(a: _WindowTick, b: _WindowTick) -> _WindowTick:
    """A new sum of two window entries (``t1`` is ``a``'s; neither argument changes)."""
    host = dict(a.host_j)
    for c, j in b.host_j.items():
        host[c] = host.get(c, 0.0) + j
    workloads = {w: dict(parts) for w, parts in a.workload_j.items()}
    for w, parts in b.workload_j.items():
        mine = workloads.setdefault(w, {})
        for c, j in parts.items():
            mine[c] = mine.get(c, 0.0) + j
    return _WindowTick(a.t1, a.seconds + b.seconds, host, workloads)


_NOTHING = _WindowTick(0.0, 0.0, {}, {})


class _SlidingSum:
    """The ticks of the gauges' window and their sum, in amortized O(1) per tick.

    Two stacks (the usual sliding-window aggregation, which needs no subtraction): new ticks
    go on the back with a running sum; the front holds older ticks, each with the sum of
    itself and every newer tick of the front, refilled from the back when it runs empty. No
    sum is ever taken apart, so a window of zeros sums to exactly 0.
    """

    def __init__(self) -> None:
        self._front: list[tuple[_WindowTick, _WindowTick]] = []  # (tick, sum); oldest last
        self._back: list[_WindowTick] = []
        self._back_sum = _NOTHING

    def __bool__(self) -> bool:
        return bool(self._front or self._back)

    def append(self, tick: _WindowTick) -> None:
        self._back.append(tick)
        self._back_sum = _summed(self._back_sum, tick)

    def oldest(self) -> _WindowTick:
        """The oldest tick (IndexError when empty)."""
        return self._front[-1][0] if self._front else self._back[0]

    def popleft(self) -> None:
        if not self._front:
            acc = _NOTHING
            for tick in reversed(self._back):
                acc = _summed(acc, tick)
                self._front.append((tick, acc))
            self._back.clear()
            self._back_sum = _NOTHING
        self._front.pop()

    def total(self) -> _WindowTick:
        """The sum of every tick in the window (``t1`` means nothing)."""
        if not self._front:
            return self._back_sum
        return _summed(self._front[-1][1], self._back_sum)


class CostStage:
    """A tick stage after attribution: converts, accumulates, publishes, feeds the ledger."""

    name = "cost"

    def __init__(
        self,
        cfg: CostConfig,
        grid: IntensitySource | None = None,
        *,
        sink: CostSink | None = None,
        fit: Fit | None = None,
    ) -> None:
        self._sink = sink
        self.fit = fit  # spans.fit_file: predicted joules per request beside the measured
        self._grid: IntensitySource = StaticIntensity(475.0)
        self._cfg = cfg
        self._items: tuple[HardwareItem, ...] = ()
        self._carbon = CarbonAccount(cfg)
        self.reconfigure(cfg, grid)
        self._window = _SlidingSum()
        self._last_workload_j: dict[tuple[str, str, str], float] = {}
        self._last_requests: dict[tuple[str, str], tuple[int, float, float]] = {}
        self._server = ServerModelDeltas()  # model rows of server-metrics workloads
        self._server_workloads: frozenset[str] = frozenset()
        self._host_cost: dict[str, float] = {}
        self._host_g = 0.0
        self._wl_cost: dict[tuple[str, str], float] = {}
        self._wl_g: dict[str, float] = {}
        self.last: CostSnapshot | None = None

    def reconfigure(self, cfg: CostConfig, grid: IntensitySource | None = None) -> None:
        """Apply reloaded settings; totals carry on (a price change is not retroactive)."""
        self._cfg = cfg
        self._items = hardware_items(cfg)
        self._carbon.reconfigure(cfg)
        tz = cfg.timezone
        if grid is not None:
            self._grid = grid
        elif isinstance(cfg.grid_intensity, GridProviderConfig):
            # No poller handed in: the provider's fallback stands, visibly static.
            self._grid = StaticIntensity(cfg.grid_intensity.fallback, tz)
        elif isinstance(cfg.grid_intensity, GridFactorConfig):
            self._grid = StaticIntensity(cfg.grid_intensity.value, tz)
        else:
            self._grid = StaticIntensity(cfg.grid_intensity, tz)

    def set_sink(self, sink: CostSink | None) -> None:
        self._sink = sink

    def factors(self, wall_s: float, mono_s: float) -> Factors:
        grid_g, age_s = self._grid.current(wall_s, mono_s)
        price = hour_of(self._cfg.energy_price.per_kwh, wall_s, self._carbon.tz)
        return Factors(self._cfg.pue, grid_g, age_s, price, self._cfg.energy_price.currency)

    # --- the tick ---
    def on_tick(self, tick: Tick, snapshot: Snapshot) -> CostSnapshot:
        host_j: dict[str, float] = {}
        estimated = 0.0
        for (component, source), j in tick.host_j.items():
            host_j[component] = host_j.get(component, 0.0) + j
            if source == ESTIMATE:
                estimated += j
        return self._account(
            tick.w1,
            tick.t1,
            tick.seconds,
            host_j,
            snapshot.attribution,
            host_estimated_j=estimated,
            server=snapshot.server_metrics,
        )

    def flush(
        self, attribution: AttributionSnapshot | None, wall_s: float, mono_s: float
    ) -> CostSnapshot | None:
        """Books for what the attribution's final flush settled (no time passes)."""
        if self.last is None and attribution is None:
            return None
        return self._account(wall_s, mono_s, 0.0, {}, attribution)

    def _workload_deltas(
        self, a: AttributionSnapshot | None, estimated: dict[str, float]
    ) -> dict[str, dict[str, float]]:
        """Per workload and component, the energy since the last tick; ``estimated`` gets
        the part of it that came from the estimate collector."""
        out: dict[str, dict[str, float]] = {}
        if a is None:
            return out
        for key, total in a.workload_energy_j.items():
            prev = self._last_workload_j.get(key, 0.0)
            self._last_workload_j[key] = total
            delta = total - prev
            if delta <= 0:
                continue  # cumulative never rewinds; a negative step is not energy
            parts = out.setdefault(key[0], {})
            parts[key[1]] = parts.get(key[1], 0.0) + delta
            if key[2] == ESTIMATE:
                estimated[key[0]] = estimated.get(key[0], 0.0) + delta
        return out

    def _request_deltas(
        self, a: AttributionSnapshot | None, f: Factors, server: ServerMetricsSnapshot | None
    ) -> dict[tuple[str, str], RequestBooks]:
        """Per (workload, model), the requests booked this tick: settled spans, or for a
        workload in server-metrics mode its server's counts and energy (as /metrics)."""
        out: dict[tuple[str, str], RequestBooks] = {}
        if server is not None:
            self._server_workloads = server.workloads
        for key, d in self._server.take(server).items():
            # A server reports tokens, not each request's work: no GFLOPs.
            out[key] = self._carbon.request(f, d.requests, d.energy_j, 0.0)
        if a is None:
            return out
        for key, st in a.requests.items():
            n0, j0, g0 = self._last_requests.get(key, (0, 0.0, 0.0))
            self._last_requests[key] = (st.count, st.energy_sum_j, st.gflops_total)
            n = st.count - n0
            if n <= 0 or key[0] in self._server_workloads:
                continue
            j = max(0.0, st.energy_sum_j - j0)
            out[key] = self._carbon.request(f, n, j, max(0.0, st.gflops_total - g0))
        return out

    def _account(
        self,
        wall_s: float,
        mono_s: float,
        seconds: float,
        host_j: dict[str, float],
        attribution: AttributionSnapshot | None,
        *,
        host_estimated_j: float = 0.0,
        server: ServerMetricsSnapshot | None = None,
    ) -> CostSnapshot:
        wl_estimated: dict[str, float] = {}
        workload_j = self._workload_deltas(attribution, wl_estimated)
        host_total_j = math.fsum(host_j.values())
        f = self._carbon.factors(
            self.factors(wall_s, mono_s),
            host_total_j,
            wall_s,
            seconds,
            self._grid.provenance(mono_s),
        )
        host_hw = math.fsum(i.total_per_hour for i in self._items) * seconds / SECONDS_PER_HOUR
        host_embodied = math.fsum(i.embodied_g_per_s for i in self._items) * seconds
        host = Books(
            energy_j=frozen(host_j),
            cost_energy=energy_cost(host_total_j, f.pue, f.price_per_kwh),
            cost_hardware=host_hw,
            emissions_g=emissions_g(host_total_j, f.pue, f.grid_g_per_kwh),
        )
        host = self._carbon.books(f, host, host_embodied, host_estimated_j)
        host_by = {**host_j, "host": host_total_j}
        workloads: dict[str, Books] = {}
        for workload, parts in workload_j.items():
            wl_total = math.fsum(parts.values())
            by = {**parts, "host": wl_total}
            hw = embodied_g = 0.0
            for item in self._items:
                share = _share(by, host_by, item)
                hw += item.total_per_hour * seconds / SECONDS_PER_HOUR * share
                embodied_g += item.embodied_g_per_s * seconds * share
            books = Books(
                energy_j=frozen(parts),
                cost_energy=energy_cost(wl_total, f.pue, f.price_per_kwh),
                cost_hardware=hw,
                emissions_g=emissions_g(wl_total, f.pue, f.grid_g_per_kwh),
            )
            workloads[workload] = self._carbon.books(
                f, books, embodied_g, wl_estimated.get(workload, 0.0)
            )
        requests = self._request_deltas(attribution, f, server)

        self._host_cost[KIND_ENERGY] = self._host_cost.get(KIND_ENERGY, 0.0) + host.cost_energy
        if self._items:
            hw_total = self._host_cost.get(KIND_HARDWARE, 0.0) + host.cost_hardware
            self._host_cost[KIND_HARDWARE] = hw_total
        self._host_g += host.emissions_g
        for workload, b in workloads.items():
            for kind, v in ((KIND_ENERGY, b.cost_energy), (KIND_HARDWARE, b.cost_hardware)):
                if kind == KIND_HARDWARE and not self._items:
                    continue
                self._wl_cost[(workload, kind)] = self._wl_cost.get((workload, kind), 0.0) + v
            self._wl_g[workload] = self._wl_g.get(workload, 0.0) + b.emissions_g
        self._carbon.add(host, workloads)
        if seconds > 0:
            self._window.append(
                _WindowTick(
                    mono_s,
                    seconds,
                    host_by,
                    {w: {**p, "host": math.fsum(p.values())} for w, p in workload_j.items()},
                )
            )
        while self._window and self._window.oldest().t1 <= mono_s - self._cfg.window:
            self._window.popleft()

        if self._sink is not None and (seconds > 0 or workloads or requests):
            try:
                self._sink(CostDelta(wall_s, seconds, f, host, workloads, requests))
            except Exception:  # the books failing must not stop the live numbers
                log.exception("cost sink failed; this tick is missing from the ledger")
        self.last = self._publish(f, self._predicted(attribution))
        return self.last

    def _predicted(self, a: AttributionSnapshot | None) -> dict[tuple[str, str], float]:
        """Per (workload, model): the fit file's own entry for the model, else the fit applied
        to the mean GFLOPs of the requests settled (only where their work is known)."""
        fit = self.fit
        out: dict[tuple[str, str], float] = {}
        if fit is None or a is None:
            return out
        for key, st in a.requests.items():
            listed = fit.joules_for_model(key[1])
            if listed is not None:
                out[key] = listed
            elif st.count and st.gflops_total > 0:
                out[key] = fit.predict_joules(st.gflops_total / st.count)
        return out

    def _publish(self, f: Factors, predicted: Mapping[tuple[str, str], float]) -> CostSnapshot:
        window = self._window.total()
        span_s, host_sum, wl_sum = window.seconds, window.host_j, window.workload_j
        host_w = host_sum.get("host", 0.0) / span_s if span_s > 0 else 0.0
        hw_per_hour = math.fsum(i.total_per_hour for i in self._items)
        host_rate = {KIND_ENERGY: rate_per_hour(host_w, f.pue, f.price_per_kwh)}
        if self._items:
            host_rate[KIND_HARDWARE] = hw_per_hour
        wl_rate: dict[tuple[str, str], float] = {}
        wl_g_rate: dict[str, float] = {}
        wl_power: dict[str, float] = {}
        wl_embodied_rate: dict[str, float] = {}
        for w in sorted({w for (w, _k) in self._wl_cost} | set(wl_sum)):
            parts = wl_sum.get(w, {})
            power_w = parts.get("host", 0.0) / span_s if span_s > 0 else 0.0
            wl_power[w] = power_w
            wl_embodied_rate[w] = SECONDS_PER_HOUR * math.fsum(
                i.embodied_g_per_s * _share(parts, host_sum, i) for i in self._items
            )
            wl_rate[(w, KIND_ENERGY)] = rate_per_hour(power_w, f.pue, f.price_per_kwh)
            if self._items:
                wl_rate[(w, KIND_HARDWARE)] = math.fsum(
                    i.total_per_hour * _share(parts, host_sum, i) for i in self._items
                )
            wl_g_rate[w] = rate_per_hour(power_w, f.pue, f.grid_g_per_kwh)
        embodied_items = [i for i in self._items if i.embodied_g_per_s > 0]
        embodied_rates = None
        if embodied_items:
            host_rate_g = SECONDS_PER_HOUR * math.fsum(i.embodied_g_per_s for i in embodied_items)
            embodied_rates = (host_rate_g, wl_embodied_rate)
        return CostSnapshot(
            factors=f,
            grid_source=self._grid.name,
            window_s=span_s,
            host_cost_per_hour=frozen(host_rate),
            host_emissions_g_per_hour=rate_per_hour(host_w, f.pue, f.grid_g_per_kwh),
            workload_cost_per_hour=frozen(wl_rate),
            workload_emissions_g_per_hour=frozen(wl_g_rate),
            host_cost_total=frozen(self._host_cost),
            host_emissions_g_total=self._host_g,
            workload_cost_total=frozen(self._wl_cost),
            workload_emissions_g_total=frozen(self._wl_g),
            hardware_per_hour=frozen({i.name: i.total_per_hour for i in self._items}),
            predicted_request_j=frozen(predicted),
            embodied_g_per_hour=frozen(
                {i.name: i.embodied_g_per_s * SECONDS_PER_HOUR for i in embodied_items}
            ),
            **self._carbon.publish(f, host_w, wl_power, embodied_rates),
        )


def _share(part: Mapping[str, float], whole: Mapping[str, float], item: HardwareItem) -> float:
    """A workload's share of one hardware item: its share of that component's energy.

    Idle and unattributed energy stay with the host, so shares sum to at most 1.
    """
    denominator = whole.get(item.component, 0.0)
    if denominator <= 0:
        return 0.0
    return min(1.0, max(0.0, part.get(item.component, 0.0) / denominator))
