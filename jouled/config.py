"""Configuration: embedded defaults, then the YAML file, then command-line flags.

Validated once at start-up into one frozen ``Config`` passed down explicitly. A bad value
stops start-up with one line naming the file, the key (and its line) and what is allowed.

Over 400 lines because it is the config contract: every key's model, default and error
message in one place, so that the README's configuration block matches it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import os
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from jouled.files import FileReadError, read_small_file

Enabled = Literal["auto"] | bool


class ConfigError(Exception):
    """A configuration problem; ``str()`` is the one line shown to the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _check_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9877), got {value!r}")
    host = host.strip("[]")
    if host and host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
                raise ValueError(f"{host!r} is not an IP address or host name") from None
    return value


HostPort = Annotated[str, Field(description="HOST:PORT")]

_ENV_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand_path(value: Any) -> Any:
    """``~``, ``~user``, ``$VAR`` and ``${VAR}`` expanded in a path value (else unchanged).

    An unset variable or an unknown user is an error rather than a literal ``$VAR`` or
    ``./~`` directory created beside the working directory.
    """
    if not isinstance(value, str | Path) or str(value) == "":
        return value

    def var(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in os.environ:
            raise ValueError(f"environment variable ${name} is not set (in {str(value)!r})")
        return os.environ[name]

    text = _ENV_VAR.sub(var, str(value))
    if text.startswith("~"):
        expanded = os.path.expanduser(text)
        if expanded.startswith("~"):
            raise ValueError(f"cannot expand {text.split('/')[0]!r}: no such user or no HOME")
        text = expanded
    return Path(text)


# Every path key of the config: ~ and environment variables expanded when it is read.
UserPath = Annotated[Path, BeforeValidator(expand_path)]


def default_ledger_path() -> Path:
    """Where the ledger goes when ``ledger.path`` is not configured.

    systemd's ``$STATE_DIRECTORY`` (``StateDirectory=jouled``) first, then
    ``/var/lib/jouled/ledger.db`` for root, else the XDG state directory:
    ``$XDG_STATE_HOME/jouled/ledger.db`` (default ``~/.local/state/jouled/ledger.db``).
    """
    state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state_dir:
        return Path(state_dir) / "ledger.db"
    if os.geteuid() == 0:
        return Path("/var/lib/jouled/ledger.db")
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(xdg):  # the XDG spec: a relative value is ignored
        xdg = os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "jouled" / "ledger.db"


class RaplConfig(_Strict):
    enabled: Enabled = "auto"
    path: UserPath = Path("/sys/class/powercap")
    # Most power a single zone can plausibly draw; separates a counter wrap from a reset.
    max_power_watts: float = Field(default=2000.0, gt=0, allow_inf_nan=False)


class NvmlConfig(_Strict):
    enabled: Enabled = "auto"
    # Power-only GPUs are polled this often and integrated (trapezoid) between ticks.
    poll_interval: float = Field(default=0.1, ge=0.01, le=10.0)
    max_power_watts: float = Field(default=3000.0, gt=0, allow_inf_nan=False)


class EstimateConfig(_Strict):
    # auto: only where no RAPL zone can be read. true: always (beside RAPL). false: never.
    enabled: Enabled = "auto"
    # Cloud Carbon Footprint's published AWS coefficients (watts per vCPU, idle and full).
    cpu_min_watts_per_vcpu: float = Field(default=0.74, ge=0, allow_inf_nan=False)
    cpu_max_watts_per_vcpu: float = Field(default=3.5, ge=0, allow_inf_nan=False)
    # Cloud Carbon Footprint's memory coefficient: 0.392 W per GB, charged (as CCF does) only
    # on memory above what the per-vCPU figure already includes: CCF's AWS MEMORY_AVG of
    # 80.69 GB per physical chip at 96 vCPUs per chip (its getPhysicalChips), 0.84 GB/vCPU.
    memory_watts_per_gb: float = Field(default=0.392, ge=0, allow_inf_nan=False)
    memory_gb_included_per_vcpu: float = Field(default=80.69 / 96, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _min_below_max(self) -> EstimateConfig:
        if self.cpu_min_watts_per_vcpu > self.cpu_max_watts_per_vcpu:
            raise ValueError(
                "cpu_min_watts_per_vcpu must not exceed cpu_max_watts_per_vcpu "
                f"({self.cpu_min_watts_per_vcpu} > {self.cpu_max_watts_per_vcpu})"
            )
        return self


class CollectorsConfig(_Strict):
    rapl: RaplConfig = RaplConfig()
    nvml: NvmlConfig = NvmlConfig()
    estimate: EstimateConfig = EstimateConfig()
    # A collector whose read takes longer than this is skipped for the tick and marked down.
    timeout: float = Field(default=0.5, gt=0, le=30)


class IngestConfig(_Strict):
    # HOST:PORT, or unix:/absolute/path for a unix socket (file mode: socket_mode).
    listen: HostPort = "127.0.0.1:9878"
    enabled: bool = True
    # A file holding the bearer token senders must present; never logged or exported.
    token_file: UserPath | None = None
    socket_mode: str = Field(default="0660", pattern=r"^0?[0-7]{3}$")
    # Requests per second over /v1/* and gRPC Export together (a token bucket); 0 = unlimited.
    max_requests_per_second: float = Field(default=1000.0, ge=0, allow_inf_nan=False)
    # OTLP/gRPC (TraceService/Export) HOST:PORT; null turns the gRPC listener off.
    grpc_listen: HostPort | None = "127.0.0.1:4317"
    # Reject spans that name a workload whose processes did not send them (sender_mismatch).
    verify_sender: bool = False
    # Request bodies (decompressed size) being read and decoded at once, across every
    # receiver; past it requests wait up to 5 s, then get 503 (jouled.ingest.limits).
    max_bytes_in_flight: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=1 << 30)
    # Seconds a sender has to deliver a request body (then 408).
    body_timeout: float = Field(default=30.0, gt=0, le=600)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value.startswith("unix:"):
            if not value.removeprefix("unix:").startswith("/"):
                raise ValueError(f"a unix socket needs an absolute path, got {value!r}")
            return value
        return _check_hostport(value)

    @field_validator("grpc_listen")
    @classmethod
    def _grpc_listen(cls, value: str | None) -> str | None:
        return None if value is None else _check_hostport(value)

    @model_validator(mode="after")
    def _two_ports(self) -> IngestConfig:
        if self.grpc_listen is not None and self.grpc_listen == self.listen:
            raise ValueError(
                f"grpc_listen and listen are both {self.listen}: OTLP/gRPC and HTTP need a "
                "port each (grpc_listen: 127.0.0.1:4317, or null to turn gRPC off)"
            )
        return self


class ConnectionsConfig(_Strict):
    """Per-listener connection limits (jouled.connections); LimitNOFILE in the unit is set
    well above max_metrics + max_ingest."""

    # Seconds from connect to a complete request head (slow or idle sockets are closed).
    header_timeout: float = Field(default=10.0, gt=0, le=300)
    # Seconds a keep-alive connection may wait for its next request.
    idle_timeout: float = Field(default=60.0, gt=0, le=3600)
    # Open connections per listener; past it, 503 and close at once.
    max_metrics: int = Field(default=64, ge=4, le=65536)
    max_ingest: int = Field(default=1024, ge=4, le=65536)


class MatchConfig(_Strict):
    """How to find a workload's processes; any rule that matches claims a process."""

    pid: int | None = Field(default=None, gt=0)
    pidfile: UserPath | None = None
    # A regex (RE2 syntax: matched in linear time) searched in the space-joined command line.
    cmdline: str | None = None
    cgroup: str | None = None  # a cgroup v2 path prefix, e.g. /kubepods.slice/...
    systemd_unit: str | None = None  # e.g. inference.service

    @field_validator("cmdline")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            from jouled.regex import compile_linear

            compile_linear(value)  # ValueError with the reason
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> MatchConfig:
        if all(
            v is None
            for v in (self.pid, self.pidfile, self.cmdline, self.cgroup, self.systemd_unit)
        ):
            raise ValueError("give at least one of pid, pidfile, cmdline, cgroup, systemd_unit")
        return self


class ServerMetricsConfig(_Strict):
    """The workload's inference server's own Prometheus endpoint (vLLM, SGLang, TGI, Triton),
    read each tick for its token and request counters (docs/TOKENS.md)."""

    url: str = Field(pattern=r"^https?://[^\s]+$")
    # Seconds a read may take (at most 0.8 x interval); a slower read marks the server down.
    timeout: float = Field(default=0.5, gt=0, le=30)
    # A page longer than this is refused (and the server marked down) instead of parsed.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    # The model's name where the server labels none (TGI serves one model); default: the
    # workload's model, else the workload's name.
    model: str | None = Field(default=None, min_length=1, max_length=256)
    # Energy of ticks in which the server reported no work waits this long for the next
    # work seen (TGI counts a request's tokens when it ends), then counts as unserved.
    carry_seconds: float = Field(default=60.0, ge=0, le=3600)


class WorkloadConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    match: MatchConfig
    server_metrics: ServerMetricsConfig | None = None
    # The model this workload serves, for spans that name none (vLLM serves one per process).
    model: str | None = Field(default=None, pattern=r"^[^\x00-\x1f\"'`\\]{1,128}$")

    @field_validator("server_metrics", mode="before")
    @classmethod
    def _url_alone(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value


class IdlePowerConfig(_Strict):
    """Known idle power per component in watts; unset components are learned on the host."""

    cpu: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    dram: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    other: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    gpu: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # per GPU board


class AttributionConfig(_Strict):
    # exclude: the thesis's method (idle power subtracted, only the active part attributed).
    # share: all energy attributed by the workloads' share of busy CPU / GPU.
    idle: Literal["exclude", "share"] = "exclude"
    idle_power_watts: IdlePowerConfig = IdlePowerConfig()
    # How often per tick the workloads' recently active processes are sampled, so that a
    # tick's energy goes to the requests running while the CPU was spent. 1 turns it off.
    cpu_samples_per_tick: int = Field(default=10, ge=1, le=100)
    # Where to read processes from: the host's /proc, e.g. /host/proc in a container.
    proc_path: UserPath = Path("/proc")


DEFAULT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0,
    50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0, 50000.0, 100000.0,
)  # fmt: skip


_AttrName = Annotated[str, Field(pattern=r"^[^\x00-\x1f]{1,255}$")]


class SpanAttributeNames(_Strict):
    """Span attribute names to read besides the built-in ones (docs/SPANS.md lists those);
    each list is tried in order before the built-ins, the first present attribute wins."""

    model: tuple[_AttrName, ...] = ()
    input_tokens: tuple[_AttrName, ...] = ()
    output_tokens: tuple[_AttrName, ...] = ()
    total_tokens: tuple[_AttrName, ...] = ()  # used when neither input nor output is given
    gflops: tuple[_AttrName, ...] = ()
    # Span-name prefixes that are never a request (e.g. a server's internal RPCs); added to
    # the built-in list (TGI's shard RPCs).
    ignore_span_names: tuple[_AttrName, ...] = ()


class SpansConfig(_Strict):
    # Spans are reported when they end: a tick must stay open longer than the longest
    # request plus the exporter's batch delay, or that request arrives late (uncounted).
    settle_seconds: float = Field(default=30.0, ge=0, le=600)
    # Spans held until their ticks settle: about spans/s x (settle_seconds + interval + the
    # exporter's batch delay), ~0.3-0.4 KB each. Past it a workload holding its fair share has
    # its new spans refused (pending_full) and jouled warns; 100,000 holds ~2,700 spans/s at
    # the 30 s settle, a 1 s tick and the SDK's 5 s batch delay.
    max_pending_spans: int = Field(default=100_000, ge=1000, le=10_000_000)
    max_models_per_workload: int = Field(default=50, ge=1, le=10000)
    # Work of a request when a span carries tokens but no jouled.gflops attribute: per model,
    # a Hugging Face config.json (prefill + decode GFLOPs, docs/COSTMODEL.md) or the name of
    # a packaged one (as `jouled model flops --config`), else a flat GFLOPs per token.
    model_configs: dict[str, UserPath] = Field(default_factory=dict)
    gflops_per_token: dict[str, float] = Field(default_factory=dict)
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    # Largest request body, after decompression (413 past it); see ingest.max_bytes_in_flight.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Window behind jouled_energy_per_gflop_joules.
    window: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    # A fit file from `jouled model fit --out`: exported as the predicted joules per request
    # beside the measured ones, so drift from the model can be alerted on.
    fit_file: UserPath | None = None
    # Extra attribute names (tried before the built-in ones) and span names that never count.
    attributes: SpanAttributeNames = SpanAttributeNames()

    @field_validator("buckets")
    @classmethod
    def _increasing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("buckets must be a non-empty, strictly increasing list")
        return value

    @field_validator("gflops_per_token")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not 0 < v <= 1e6]  # NaN and inf too
        if bad:
            raise ValueError(f"GFLOPs per token must be > 0 and at most 1e6 (model {bad[0]!r})")
        return value


HOURS_PER_DAY = 24


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _no_repeats(names: list[str], what: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} names must be unique: {', '.join(dupes)} repeated")


def _hourly(value: float | tuple[float, ...], what: str) -> float | tuple[float, ...]:
    if isinstance(value, tuple) and len(value) != HOURS_PER_DAY:
        raise ValueError(
            f"an hourly {what} profile needs exactly 24 values (hour 0 to 23 of "
            f"cost.timezone), got {len(value)}"
        )
    return value


# Kinds of grid emission factor (docs/COST.md): an *average* factor is the grid's mix (the
# GHG Protocol Scope 2 location-based method asks for it); a *marginal* one is the plant that
# answers one more kWh (for decisions, not inventories). *operational* counts combustion at
# the plant; *lifecycle* adds upstream fuel, construction and end of life, which in a GHG
# inventory belongs in Scope 3 category 3. ``unstated``: nobody said (a bare number).
FactorType = Literal["average", "marginal", "unstated"]
FactorBoundary = Literal["operational", "lifecycle", "unstated"]


class GridProviderConfig(_Strict):
    """A live grid-intensity source, polled in the background (see docs/COST.md)."""

    # electricitymaps: /v3/carbon-intensity/latest (auth-token header, zone required);
    # uk_national_grid: api.carbonintensity.org.uk /intensity (no token, Great Britain);
    # watttime: /v3/forecast co2_moer (lbs/MWh, converted; region required).
    provider: Literal["electricitymaps", "uk_national_grid", "watttime"]
    zone: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # A file holding the API token (watttime: a token, or USER:PASSWORD to log in).
    # Read on each poll, so a rotated token is picked up; never logged or exported.
    token_file: UserPath | None = None
    # Base URL override (a proxy, a test server); default: the provider's public API.
    url: str | None = Field(default=None, pattern=r"^https?://")
    interval: float = Field(default=300.0, ge=0.05, le=86400)
    timeout: float = Field(default=10.0, gt=0, le=120)
    # After this long without a good answer the static fallback stands again.
    max_age: float = Field(default=6 * 3600.0, gt=0)
    # gCO2e/kWh in force until the first good answer (and after max_age).
    fallback: float = Field(default=475.0, ge=0, le=5000)
    # What kind of factor the provider gives; omitted: what the provider's answer or
    # documentation says (electricitymaps: average, lifecycle unless `operational`, then
    # jouled asks for emissionFactorType=direct; uk_national_grid: average, operational;
    # watttime: marginal, operational).
    boundary: Literal["operational", "lifecycle"] | None = None

    @model_validator(mode="after")
    def _needs(self) -> GridProviderConfig:
        if self.provider in ("electricitymaps", "watttime"):
            if self.zone is None:
                what = "zone (e.g. DE)" if self.provider == "electricitymaps" else "zone (region)"
                raise ValueError(f"provider {self.provider} needs {what}")
            if self.token_file is None:
                raise ValueError(f"provider {self.provider} needs token_file (a file path)")
        return self


class GridFactorConfig(_Strict):
    """A configured grid factor with its provenance: ``{value: 380, factor_type: average,
    boundary: operational, source: "UBA 2024, DE"}``."""

    # gCO2e/kWh, or 24 hourly values (hours of cost.timezone).
    value: float | tuple[float, ...]
    factor_type: FactorType = "unstated"
    boundary: FactorBoundary = "unstated"
    # Grid zone or region the factor is for (free text, e.g. DE, CAISO_NORTH).
    zone: str = Field(default="", max_length=64)
    # Where the number comes from (publication, year): kept in the ledger as the provider.
    source: str = Field(default="configured", min_length=1, max_length=120)

    @field_validator("value", mode="before")
    @classmethod
    def _shape(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if not all(_is_number(v) for v in value):
                raise ValueError("an hourly profile must hold 24 numbers (gCO2e/kWh)")
            return tuple(float(v) for v in value)
        return value

    @field_validator("value")
    @classmethod
    def _range(cls, value: float | tuple[float, ...]) -> float | tuple[float, ...]:
        values = value if isinstance(value, tuple) else (value,)
        if any(not 0 <= v <= 5000 for v in values):
            raise ValueError("grid intensity must be between 0 and 5000 gCO2e/kWh")
        return _hourly(value, "grid intensity")


class InstrumentConfig(_Strict):
    """A contractual instrument (GHG Protocol Scope 2 Guidance, market-based method): an
    energy attribute certificate (GO, REC, I-REC), a PPA or a green tariff, for ``mwh`` of
    this host's electricity consumed in [start, end), at ``factor`` gCO2e/kWh."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    kind: Literal["certificate", "ppa", "green_tariff", "other"] = "certificate"
    mwh: float = Field(gt=0, le=1e9)
    start: dt.datetime
    end: dt.datetime
    # Emission rate the instrument conveys (0 for wind, solar, hydro certificates).
    factor: float = Field(default=0.0, ge=0, le=5000)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date(cls, value: Any) -> Any:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        return value

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)

    @model_validator(mode="after")
    def _period(self) -> InstrumentConfig:
        if self.end <= self.start:
            raise ValueError(f"instrument {self.name!r}: end must be after start")
        return self


class MarketBasedConfig(_Strict):
    """Inputs of the market-based Scope 2 method; energy no instrument covers gets the
    supplier's factor, else the residual mix, else (flagged) the location-based factor."""

    instruments: tuple[InstrumentConfig, ...] = ()
    # The supplier's disclosed emission rate for this contract (gCO2e/kWh).
    supplier_factor: float | None = Field(default=None, ge=0, le=5000)
    # The residual mix of the market (e.g. AIB European Residual Mixes), gCO2e/kWh.
    residual_mix: float | None = Field(default=None, ge=0, le=5000)

    @field_validator("instruments")
    @classmethod
    def _unique(cls, value: tuple[InstrumentConfig, ...]) -> tuple[InstrumentConfig, ...]:
        _no_repeats([i.name for i in value], "instrument")
        return value


# Far above any tariff in any currency; NaN and inf (a cost series stuck at NaN or +Inf for
# good) are refused with it.
MAX_PRICE_PER_KWH = 1e6


class EnergyPriceConfig(_Strict):
    # A flat price, or 24 hourly prices (hours of cost.timezone) for a time-of-use tariff.
    per_kwh: float | tuple[float, ...] = Field(default=0.20)
    # ISO 4217 code; every cost jouled reports is in this currency.
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")

    @field_validator("per_kwh", mode="before")
    @classmethod
    def _price_shape(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if not all(_is_number(v) for v in value):
                raise ValueError("an hourly price profile must hold 24 numbers")
            return tuple(float(v) for v in value)
        if not _is_number(value):
            raise ValueError("expected a price per kWh, or a list of 24 hourly prices")
        return value

    @field_validator("per_kwh")
    @classmethod
    def _price(cls, value: float | tuple[float, ...]) -> float | tuple[float, ...]:
        values = value if isinstance(value, tuple) else (value,)
        if any(not 0 <= v <= MAX_PRICE_PER_KWH for v in values):  # NaN and inf too
            raise ValueError(f"per_kwh must be a number from 0 to {MAX_PRICE_PER_KWH:g}")
        return _hourly(value, "price")


class HardwareCostConfig(_Strict):
    """Hardware rented or amortized by the hour, charged to workloads by energy share."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # Price per hour per unit in energy_price.currency; omitted: the preset's (USD only).
    per_hour: float | None = Field(default=None, ge=0, le=1e9)
    count: int = Field(default=1, ge=1, le=1024)
    # The component whose energy share charges a workload: gpu for accelerators, cpu for the
    # rest; host: the share of all host IT energy. Omitted: gpu for a GPU preset, else cpu.
    component: Literal["cpu", "dram", "gpu", "other", "host"] | None = None
    # Embodied (manufacturing) emissions per unit in kgCO2e, amortized linearly over
    # lifetime_years (GHG Scope 3 category 2); omitted: the preset's (jouled/cost/embodied.py).
    # At least 0.01 year (3.65 days): 1e-300 years made the amortized series +Inf in seconds.
    embodied_kgco2e: float | None = Field(default=None, ge=0, le=1e6)
    lifetime_years: float | None = Field(default=None, ge=0.01, le=50)


class CostConfig(_Strict):
    # Seconds of measured power behind the live $/h and gCO2e/h gauges.
    window: float = Field(default=60.0, gt=0, le=86400)
    # Power usage effectiveness: facility energy / IT energy. 1.58 is the Uptime Institute
    # survey average; hyperscale clouds report about 1.1 (docs/COST.md lists values).
    pue: float = Field(default=1.58, ge=1.0, le=5.0)
    # gCO2e per kWh: a number (475: the IEA world average), 24 hourly values, a block with
    # the factor's provenance {value, factor_type, boundary, zone, source}, or a provider
    # block. This is the location-based Scope 2 factor.
    grid_intensity: float | tuple[float, ...] | GridFactorConfig | GridProviderConfig = 475.0
    # Market-based Scope 2 inputs; omitted: the market-based series equals location-based.
    market_based: MarketBasedConfig = MarketBasedConfig()
    energy_price: EnergyPriceConfig = EnergyPriceConfig()
    hardware: tuple[HardwareCostConfig, ...] = ()
    # IANA time zone of the hourly price and intensity profiles (DST by zoneinfo).
    timezone: str = "UTC"
    # Water usage effectiveness, litres per kWh of IT energy, on site (The Green Grid WUE).
    wue: float = Field(default=0.0, ge=0, le=100)
    # Water consumed off site to generate a kWh of the grid's electricity (L/kWh).
    grid_water_intensity: float = Field(default=0.0, ge=0, le=1000)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: name too long
            raise ValueError(
                f"unknown time zone {value[:80]!r}: give an IANA name such as Europe/Berlin or UTC"
            ) from None
        return value

    @field_validator("grid_intensity", mode="before")
    @classmethod
    def _intensity_shape(cls, value: Any) -> Any:
        # Validated here rather than by the union, so an error names the branch the user
        # meant instead of listing every branch's complaint.
        if isinstance(value, dict):
            model = GridProviderConfig if "provider" in value else GridFactorConfig
            try:
                return model.model_validate(value)
            except ValidationError as exc:
                err = exc.errors()[0]
                key = ".".join(str(x) for x in err["loc"])
                msg = str(err["msg"]).removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    msg = "unknown key"
                raise ValueError(f"{key + ': ' if key else ''}{msg}") from None
        if isinstance(value, list | tuple):
            if not all(_is_number(v) for v in value):
                raise ValueError("an hourly profile must hold 24 numbers (gCO2e/kWh)")
            return tuple(float(v) for v in value)
        if not _is_number(value):
            raise ValueError(
                "expected a number (gCO2e/kWh), a list of 24 hourly numbers, "
                "a block {value, factor_type, boundary, source}, "
                "or a provider block {provider: electricitymaps | uk_national_grid | watttime}"
            )
        return value

    @field_validator("grid_intensity")
    @classmethod
    def _intensity(
        cls, value: float | tuple[float, ...] | GridFactorConfig | GridProviderConfig
    ) -> float | tuple[float, ...] | GridFactorConfig | GridProviderConfig:
        if isinstance(value, GridProviderConfig | GridFactorConfig):
            return value
        values = value if isinstance(value, tuple) else (value,)
        if any(not 0 <= v <= 5000 for v in values):
            raise ValueError("grid intensity must be between 0 and 5000 gCO2e/kWh")
        return _hourly(value, "grid intensity")

    @field_validator("hardware")
    @classmethod
    def _hardware_prices(
        cls, value: tuple[HardwareCostConfig, ...], info: ValidationInfo
    ) -> tuple[HardwareCostConfig, ...]:
        from jouled.cost.embodied import PRESETS as EMBODIED
        from jouled.cost.embodied import preset as embodied_preset
        from jouled.costmodel.hardware import PRESETS

        _no_repeats([h.name.lower() for h in value], "hardware")
        price = info.data.get("energy_price")
        currency = price.currency if isinstance(price, EnergyPriceConfig) else "USD"
        priced = sorted(n for n, p in PRESETS.items() if p.price_per_hour_usd is not None)
        for h in value:
            embodied = embodied_preset(h.name)
            if h.embodied_kgco2e is not None and h.lifetime_years is None and embodied is None:
                raise ValueError(
                    f"hardware {h.name!r}: embodied_kgco2e needs lifetime_years (e.g. 4)"
                )
            if h.per_hour is not None:
                continue
            if h.embodied_kgco2e is not None or embodied is not None:
                continue  # carbon books only: no hourly price, cost 0
            preset = next((p for n, p in PRESETS.items() if n.lower() == h.name.lower()), None)
            if preset is None or preset.price_per_hour_usd is None:
                raise ValueError(
                    f"hardware {h.name!r} needs per_hour or embodied_kgco2e (presets with a "
                    f"price: {', '.join(priced)}; with embodied emissions: "
                    f"{', '.join(EMBODIED)})"
                )
            if currency != "USD":
                raise ValueError(
                    f"hardware {h.name!r}: the preset price is in USD but energy_price.currency "
                    f"is {currency}; give per_hour in {currency}"
                )
        return value


class LedgerConfig(_Strict):
    # SQLite file (WAL); empty or null disables the ledger. Its directory is created.
    # Not configured: default_ledger_path() (root: /var/lib/jouled, else the XDG state dir).
    path: UserPath | None = Field(default_factory=default_ledger_path)
    # Seconds between writes; a crash (kill -9) loses at most this much of the books.
    flush_interval: float = Field(default=10.0, ge=0.05, le=3600)
    # Days of per-minute rows kept; 0 keeps them forever.
    retention_days: float = Field(default=400.0, ge=0)

    @field_validator("path", mode="before")
    @classmethod
    def _empty_disables(cls, value: Any) -> Any:
        return None if value == "" else value


class Config(_Strict):
    interval: float = Field(default=1.0, ge=0.1, le=60.0)
    listen: HostPort = "0.0.0.0:9877"
    ingest: IngestConfig = IngestConfig()
    connections: ConnectionsConfig = ConnectionsConfig()
    collectors: CollectorsConfig = CollectorsConfig()
    workloads: tuple[WorkloadConfig, ...] = ()
    attribution: AttributionConfig = AttributionConfig()
    spans: SpansConfig = SpansConfig()
    cost: CostConfig = CostConfig()
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)  # its path follows the user
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    _hp = field_validator("listen")(_check_hostport)

    @field_validator("workloads")
    @classmethod
    def _unique(cls, value: tuple[WorkloadConfig, ...]) -> tuple[WorkloadConfig, ...]:
        _no_repeats([w.name for w in value], "workload")
        return value

    def with_overrides(self, **flags: Any) -> Config:
        """Flags win over the file; ``None`` means the flag was not given."""
        # Only what was set: defaults that follow the environment (the ledger) stay defaults.
        data = self.model_dump(exclude_unset=True)
        for key, value in flags.items():
            if value is not None:
                data[key] = value
        return validate(data, "<command line>")


DEFAULT_CONFIG = Config()


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "<top level>"


def _line_of(text: str | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of a key in the YAML text, found by walking the node tree."""
    if not text:
        return None
    try:
        node: Any = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for item in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == item:
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int):
            if item >= len(node.value):
                return line
            node = node.value[item]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _allowed(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown key (check spelling; see the configuration reference in README)"
    if err["type"] == "missing":
        return "required key is missing"
    return msg.removeprefix("Value error, ")


def validate(data: Any, source: str, text: str | None = None) -> Config:
    """Build a Config from parsed YAML, or raise ConfigError naming file, key and line."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of keys, not {type(data).__name__}"
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, text)) from None


def _describe(exc: ValidationError, source: str, text: str | None) -> str:
    # Literal|bool unions report one error per branch (loc ends in "literal[...]" or
    # "bool"); fold them into one line per key.
    by_key: dict[tuple[int | str, ...], list[dict[str, Any]]] = {}
    for err in exc.errors():
        loc = tuple(
            x for x in err["loc"] if not (isinstance(x, str) and x.startswith(("literal[", "bool")))
        )
        by_key.setdefault(loc, []).append(dict(err))
    loc, errs = next(iter(by_key.items()))
    first = errs[0]
    prefix = "Input should be "
    reasons = [_allowed(e) for e in errs]
    should = [r.removeprefix(prefix) for r in reasons if r.startswith(prefix)]
    parts = [r for r in reasons if not r.startswith(prefix)]
    if should:
        parts.append("must be " + " or ".join(dict.fromkeys(should)))
    reason = "; ".join(parts)
    line = _line_of(text, loc)
    where = f"{source}:{line}" if line else source
    value = first.get("input")
    got = ""
    if first["type"] not in ("extra_forbidden", "missing", "value_error") and not isinstance(
        value, dict
    ):
        got = f" (got {value!r})"
    more = f" [+{len(by_key) - 1} more problems]" if len(by_key) > 1 else ""
    return f"{where}: key '{_key_path(loc)}': {reason}{got}{more}"


# A real config is a few kB; 1 MiB leaves room for hundreds of workloads and stays a fraction
# of a second of YAML parsing (a 10 MB file took ~8 s).
MAX_CONFIG_BYTES = 1024 * 1024


def read_config_text(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The file's text, or ``ConfigError``: not a regular file (a FIFO, a device: opened
    without blocking and refused), over ``max_bytes``, or not UTF-8 (with the byte offset)."""
    try:
        raw = read_small_file(path, max_bytes, "config file")
    except FileReadError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None


def load(path: Path | None) -> Config:
    """Embedded defaults, overlaid by the file at ``path`` (if any)."""
    if path is None:
        return Config()  # not DEFAULT_CONFIG: the ledger's default follows the environment
    text = read_config_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    return validate(data, str(path), text)
