"""Live grid carbon intensity (gCO2e per kWh of electricity) from public providers.

A *provider* answers one HTTP request with the intensity in force now: Electricity Maps
(average intensity of a zone), the UK National Grid's Carbon Intensity API (Great Britain,
``actual`` else ``forecast``) or WattTime (marginal operating emissions rate, MOER, in
lbs/MWh, converted). A *poller* asks on an interval with a timeout, backs off on failure,
and keeps the last good answer (the cache); past ``max_age`` the static fallback stands.
Tokens are read from a file on each poll and never logged, exported or put in errors.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol

import aiohttp

from jouled import httpget
from jouled.clock import Clock
from jouled.config import GridProviderConfig
from jouled.cost.carbon import PROVIDER_FACTORS, Provenance
from jouled.files import MAX_TOKEN_BYTES, FileReadError, read_small_file
from jouled.pipeline.cost import GridStatus
from jouled.tls import verified_context

log = logging.getLogger(__name__)

# 1 lb = 453.59237 g and 1 MWh = 1000 kWh, so 1 lb/MWh = 0.45359237 g/kWh.
G_PER_KWH_PER_LBS_PER_MWH: Final = 0.45359237
MAX_PLAUSIBLE_G_PER_KWH: Final = 5000.0
MAX_BODY_BYTES: Final = 1 << 20
MAX_BACKOFF_S: Final = 3600.0
JITTER_FRACTION: Final = 0.25  # a retry waits up to a quarter longer, drawn per host
_AGENT: Final = {"User-Agent": "jouled"}

# `reason` label values of jouled_grid_provider_errors_total.
AUTH: Final = "auth"
RATE_LIMITED: Final = "rate_limited"
TIMEOUT: Final = "timeout"
HTTP: Final = "http"
GARBAGE: Final = "garbage"
NETWORK: Final = "network"
TOKEN: Final = "token"


class ProviderError(Exception):
    """One failed poll; ``reason`` is a label value, ``str()`` is safe to log (no token)."""

    def __init__(self, reason: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class TokenFile:
    """An API token kept in a file (mode 0600 in production); read on each poll."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str:
        try:
            token = read_small_file(self.path, MAX_TOKEN_BYTES, "token file").decode().strip()
        except (FileReadError, UnicodeDecodeError) as exc:
            raise ProviderError(TOKEN, f"cannot use token file {self.path}: {exc}") from None
        if not token:
            raise ProviderError(TOKEN, f"token file {self.path} is empty")
        return token

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"  # the path, never the content


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


async def get_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """GET and decode JSON, mapping every failure to a ProviderError reason."""
    try:
        async with session.get(url, params=params, headers=headers) as resp:
            try:
                body = await httpget.read_body(resp.content, MAX_BODY_BYTES)
            except httpget.TooLarge:
                body = b""  # said below, once the status is known
                too_large = True
            else:
                too_large = False
            if resp.status in (401, 403):
                raise ProviderError(AUTH, f"HTTP {resp.status}: the token was refused")
            if resp.status == 429:
                raise ProviderError(
                    RATE_LIMITED, "HTTP 429: rate limited", _retry_after(resp.headers)
                )
            if resp.status != 200:
                raise ProviderError(HTTP, f"HTTP {resp.status}")
    except TimeoutError:
        raise ProviderError(TIMEOUT, "no answer within the timeout") from None
    except aiohttp.ClientError as exc:
        # The exception text names host and port only; headers (the token) are not in it.
        raise ProviderError(NETWORK, f"{type(exc).__name__}: {exc}") from None
    if too_large:
        raise ProviderError(GARBAGE, f"the answer is over {MAX_BODY_BYTES >> 20} MiB")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise ProviderError(GARBAGE, "the answer is not JSON") from None


def _number(value: Any, what: str) -> float:
    try:  # an int past any float (400 digits) overflows: no number either
        number = float(value) if isinstance(value, int | float) else math.nan
    except OverflowError:
        number = math.inf
    if isinstance(value, bool) or not math.isfinite(number):
        raise ProviderError(GARBAGE, f"{what} is not a number: {str(value)[:40]!r}")
    return number


def _dig(doc: Any, *path: str | int) -> Any:
    node = doc
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            where = ".".join(str(p) for p in path)
            raise ProviderError(GARBAGE, f"the answer has no {where}") from None
    return node


class Provider(Protocol):
    name: str
    # The boundary (operational | lifecycle) the last answer said it had; None: the
    # answer does not say, the provider's documented one stands (cost.carbon).
    boundary: str | None

    async def fetch(self, session: aiohttp.ClientSession) -> float: ...


class ElectricityMaps:
    """``GET /v3/carbon-intensity/latest?zone=Z`` with an ``auth-token`` header."""

    name = "electricitymaps"
    default_url = "https://api.electricitymap.org"
    # The answer's emissionFactorType: lifecycle (the default) or direct (operational).
    _BOUNDARY: Final = {"lifecycle": "lifecycle", "direct": "operational"}

    def __init__(
        self, zone: str, token: TokenFile, url: str | None = None, *, direct: bool = False
    ) -> None:
        self.zone = zone
        self._token = token
        self.url = (url or self.default_url).rstrip("/")
        self.direct = direct
        self.boundary: str | None = None

    async def fetch(self, session: aiohttp.ClientSession) -> float:
        params = {"zone": self.zone}
        if self.direct:
            params["emissionFactorType"] = "direct"
        doc = await get_json(
            session,
            f"{self.url}/v3/carbon-intensity/latest",
            params=params,
            headers={"auth-token": self._token.read()},
        )
        value = _number(_dig(doc, "carbonIntensity"), "carbonIntensity")
        said = doc.get("emissionFactorType") if isinstance(doc, dict) else None
        self.boundary = self._BOUNDARY.get(said) if isinstance(said, str) else None
        return value


class UkNationalGrid:
    """``GET /intensity`` of api.carbonintensity.org.uk: the current half hour for GB."""

    name = "uk_national_grid"
    default_url = "https://api.carbonintensity.org.uk"
    boundary: str | None = None  # the answer does not say; documented: operational

    def __init__(self, url: str | None = None) -> None:
        self.url = (url or self.default_url).rstrip("/")

    async def fetch(self, session: aiohttp.ClientSession) -> float:
        doc = await get_json(session, f"{self.url}/intensity")
        intensity = _dig(doc, "data", 0, "intensity")
        if not isinstance(intensity, dict):
            raise ProviderError(GARBAGE, "data[0].intensity is not an object")
        # `actual` is null until the half hour has been measured; the forecast stands in.
        value = intensity.get("actual")
        if value is None:
            value = intensity.get("forecast")
        return _number(value, "intensity.actual/forecast")


class WattTime:
    """``GET /v3/forecast?signal_type=co2_moer&horizon_hours=0``: MOER now, in lbs/MWh.

    The token file holds a bearer token, or ``USER:PASSWORD``, with which jouled logs in
    (``GET /login``, basic auth) and logs in again when the 30-minute token expires.
    """

    name = "watttime"
    default_url = "https://api.watttime.org"
    boundary: str | None = None  # MOER: a marginal operating emissions rate

    def __init__(self, region: str, token: TokenFile, url: str | None = None) -> None:
        self.region = region
        self._token = token
        self.url = (url or self.default_url).rstrip("/")
        self._bearer: str | None = None

    async def _login(self, session: aiohttp.ClientSession, secret: str) -> str:
        basic = base64.b64encode(secret.encode()).decode("ascii")
        doc = await get_json(
            session, f"{self.url}/login", headers={"Authorization": f"Basic {basic}"}
        )
        token = _dig(doc, "token")
        if not isinstance(token, str) or not token:
            raise ProviderError(GARBAGE, "the login answer has no token")
        return token

    async def fetch(self, session: aiohttp.ClientSession) -> float:
        secret = self._token.read()
        login = ":" in secret
        for attempt in range(2):
            if login and self._bearer is None:
                self._bearer = await self._login(session, secret)
            bearer = self._bearer if login else secret
            try:
                doc = await get_json(
                    session,
                    f"{self.url}/v3/forecast",
                    params={"region": self.region, "signal_type": "co2_moer", "horizon_hours": "0"},
                    headers={"Authorization": f"Bearer {bearer}"},
                )
            except ProviderError as exc:
                if exc.reason == AUTH and login and attempt == 0:
                    self._bearer = None  # expired: log in once more
                    continue
                raise
            units = _dig(doc, "meta", "units") if isinstance(doc, dict) and "meta" in doc else None
            if units not in (None, "lbs_co2_per_mwh"):
                raise ProviderError(GARBAGE, f"unexpected units {str(units)[:40]!r}")
            lbs_per_mwh = _number(_dig(doc, "data", 0, "value"), "data[0].value")
            return lbs_per_mwh * G_PER_KWH_PER_LBS_PER_MWH
        raise ProviderError(AUTH, "the token was refused after logging in again")


def build_provider(cfg: GridProviderConfig) -> Provider:
    token = TokenFile(cfg.token_file) if cfg.token_file is not None else None
    if cfg.provider == "electricitymaps":
        assert cfg.zone is not None and token is not None  # the config validated it
        return ElectricityMaps(cfg.zone, token, cfg.url, direct=cfg.boundary == "operational")
    if cfg.provider == "watttime":
        assert cfg.zone is not None and token is not None
        return WattTime(cfg.zone, token, cfg.url)
    return UkNationalGrid(cfg.url)


def backoff_s(
    failures: int, interval_s: float, retry_after_s: float | None = None, jitter: float = 0.0
) -> float:
    """Seconds before the next poll after ``failures`` failures in a row (0: success).

    Doubles from the interval up to an hour (never below the interval, never before the
    provider's Retry-After); ``jitter`` in [0, 1) lengthens a retry by up to
    ``JITTER_FRACTION``, so a fleet that failed together does not retry in lockstep.
    """
    if failures <= 0:
        return interval_s
    delay = min(interval_s * (1 << min(failures - 1, 20)), max(interval_s, MAX_BACKOFF_S))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay * (1.0 + JITTER_FRACTION * min(max(jitter, 0.0), 1.0))


Sleep = Callable[[float], Awaitable[None]]


class GridPoller:
    """Polls a provider in the background; ``current()`` is what the cost stage reads."""

    def __init__(
        self,
        cfg: GridProviderConfig,
        clock: Clock,
        *,
        provider: Provider | None = None,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.cfg = cfg
        self.provider = provider or build_provider(cfg)
        self.name = self.provider.name
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._started_mono = clock.monotonic()
        self._value: float | None = None
        self._value_mono = 0.0
        self._failures = 0
        self._polls = 0
        self._up = False
        self._errors: dict[str, int] = {}
        self._last_reason: str | None = None
        self._retry_after: float | None = None

    def current(self, wall_s: float, mono_s: float) -> tuple[float, float]:
        if self._value is not None:
            age = max(0.0, mono_s - self._value_mono)
            if age <= self.cfg.max_age:
                return self._value, age
            return self.cfg.fallback, age
        return self.cfg.fallback, max(0.0, mono_s - self._started_mono)

    def provenance(self, mono_s: float) -> Provenance:
        """What the value in force at ``mono_s`` is: the provider's answer (its type and
        boundary), or the configured fallback (a bare number: unstated)."""
        zone = self.cfg.zone or ("GB" if self.cfg.provider == "uk_national_grid" else "")
        fresh = self._value is not None and mono_s - self._value_mono <= self.cfg.max_age
        if not fresh:
            return Provenance("fallback", zone, "unstated", "unstated")
        factor_type, boundary = PROVIDER_FACTORS[self.cfg.provider]
        boundary = self.provider.boundary or self.cfg.boundary or boundary
        return Provenance(self.name, zone, factor_type, boundary)

    def status(self) -> GridStatus:
        return GridStatus(self.name, self._up, self._polls, MappingProxyType(dict(self._errors)))

    async def poll_once(self, session: aiohttp.ClientSession) -> float | None:
        """One request; on success the new value, on failure None (and the next delay)."""
        self._polls += 1
        try:
            value: float = await asyncio.wait_for(self.provider.fetch(session), self.cfg.timeout)
            if not 0 <= value <= MAX_PLAUSIBLE_G_PER_KWH:
                raise ProviderError(GARBAGE, f"implausible intensity {value:g} gCO2e/kWh")
        except TimeoutError:
            self._fail(ProviderError(TIMEOUT, f"no answer within {self.cfg.timeout:g}s"))
            return None
        except ProviderError as exc:
            self._fail(exc)
            return None
        except Exception as exc:  # a provider's bug must not end the poller for good
            self._fail(ProviderError(GARBAGE, f"{type(exc).__name__}: {str(exc)[:200]}"))
            return None
        if not self._up and self._polls > 1:
            log.info("grid intensity from %s is back: %.1f gCO2e/kWh", self.name, value)
        self._value, self._value_mono = value, self._clock.monotonic()
        self._failures, self._up, self._last_reason = 0, True, None
        self._retry_after = None
        return value

    def _fail(self, exc: ProviderError) -> None:
        self._errors[exc.reason] = self._errors.get(exc.reason, 0) + 1
        self._failures += 1
        self._up = False
        self._retry_after = exc.retry_after_s
        stands = "the last good value" if self._value is not None else "the static fallback"
        # Once per change of reason at warning: a provider down for a day is not 300 lines.
        level = logging.WARNING if exc.reason != self._last_reason else logging.DEBUG
        log.log(level, "grid intensity from %s failed (%s); %s stands", self.name, exc, stands)
        self._last_reason = exc.reason

    def next_delay_s(self) -> float:
        """The sleep before the next poll: the interval, or a jittered backoff after failures."""
        return backoff_s(self._failures, self.cfg.interval, self._retry_after, self._jitter())

    async def run(self, session: aiohttp.ClientSession | None = None) -> None:
        """Poll until cancelled; its session verifies https with its own context (jouled/tls.py)."""
        own = session is None
        if session is None:
            connector = aiohttp.TCPConnector(ssl=await asyncio.to_thread(verified_context))
            timeout = aiohttp.ClientTimeout(total=self.cfg.timeout)
            session = aiohttp.ClientSession(timeout=timeout, headers=_AGENT, connector=connector)
        try:
            while True:
                await self.poll_once(session)
                await self._sleep(self.next_delay_s())
        finally:
            if own:
                await session.close()
