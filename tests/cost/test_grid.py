"""Grid-intensity providers against local aiohttp servers answering with each provider's
documented JSON, and with 401, 429, timeouts and garbage."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from jouled import config
from jouled.clock import FakeClock
from jouled.config import GridProviderConfig
from jouled.cost import grid
from jouled.cost.carbon import Provenance
from jouled.cost.grid import GridPoller, ProviderError
from jouled.cost.live import CostStage
from jouled.exporter.cost import CostCollector
from jouled.pipeline.snapshot import EMPTY
from tests.cost.helpers import snapshot, tick

TOKEN = "s3cret-T0KEN-value"

Handler = Callable[[web.Request], Any]


class FakeApi:
    """One loopback server; each test sets the handler and reads what was asked."""

    def __init__(self) -> None:
        self.handler: Handler = lambda r: web.json_response({})
        self.requests: list[web.Request] = []
        self.url = ""

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        result = self.handler(request)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, web.StreamResponse)
        return result


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    fake = FakeApi()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", fake._dispatch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    yield fake
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    p = tmp_path / "token"
    p.write_text(TOKEN + "\n")
    return p


def poller(api: FakeApi, provider: str, token_file: Path | None, **kw: Any) -> GridPoller:
    cfg = GridProviderConfig(
        provider=provider,  # type: ignore[arg-type]
        zone="DE" if provider != "uk_national_grid" else None,
        token_file=token_file,
        url=api.url,
        **{"timeout": 0.5, "fallback": 475.0, **kw},
    )
    return GridPoller(cfg, FakeClock())


# Documented answers (Electricity Maps v3, carbonintensity.org.uk, WattTime v3).
EMAPS = {
    "zone": "DE",
    "carbonIntensity": 302,
    "datetime": "2025-01-01T10:00:00.000Z",
    "updatedAt": "2025-01-01T09:48:12.102Z",
    "emissionFactorType": "lifecycle",
    "isEstimated": True,
}
UK = {
    "data": [
        {
            "from": "2025-01-01T10:00Z",
            "to": "2025-01-01T10:30Z",
            "intensity": {"forecast": 266, "actual": 263, "index": "moderate"},
        }
    ]
}
WATTTIME = {
    "data": [{"point_time": "2025-01-01T10:00:00+00:00", "value": 1000.0}],
    "meta": {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh"},
}


async def test_electricity_maps_latest_with_auth_token_header(
    api: FakeApi, session: aiohttp.ClientSession, token_file: Path
) -> None:
    api.handler = lambda r: web.json_response(EMAPS)
    p = poller(api, "electricitymaps", token_file)
    assert await p.poll_once(session) == 302.0
    req = api.requests[0]
    assert req.path == "/v3/carbon-intensity/latest"
    assert req.query["zone"] == "DE"
    assert req.headers["auth-token"] == TOKEN
    assert p.current(0, 0) == (302.0, 0.0)


async def test_uk_national_grid_actual_else_forecast(
    api: FakeApi, session: aiohttp.ClientSession
) -> None:
    api.handler = lambda r: web.json_response(UK)
    p = poller(api, "uk_national_grid", None)
    assert await p.poll_once(session) == 263.0
    assert api.requests[0].path == "/intensity"
    pending = {"data": [{**UK["data"][0], "intensity": {"forecast": 180, "actual": None}}]}
    api.handler = lambda r: web.json_response(pending)
    assert await p.poll_once(session) == 180.0


async def test_watttime_moer_in_lbs_per_mwh_is_converted(
    api: FakeApi, session: aiohttp.ClientSession, token_file: Path
) -> None:
    api.handler = lambda r: web.json_response(WATTTIME)
    p = poller(api, "watttime", token_file)
    # 1000 lbs/MWh = 453592.37 g / 1000 kWh = 453.59237 g/kWh.
    assert await p.poll_once(session) == pytest.approx(453.59237)
    req = api.requests[0]
    assert req.path == "/v3/forecast"
    assert req.query["signal_type"] == "co2_moer" and req.query["region"] == "DE"
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_watttime_logs_in_with_user_password_and_again_when_the_token_expires(
    api: FakeApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    creds = tmp_path / "wt"
    creds.write_text("me:pw")
    issued = iter(["tok-1", "tok-2"])

    def handler(r: web.Request) -> web.Response:
        if r.path == "/login":
            assert r.headers["Authorization"] == "Basic " + base64.b64encode(b"me:pw").decode()
            return web.json_response({"token": next(issued)})
        if r.headers.get("Authorization") == "Bearer tok-1" and len(api.requests) > 2:
            return web.json_response({"error": "expired"}, status=401)
        return web.json_response(WATTTIME)

    api.handler = handler
    p = poller(api, "watttime", creds)
    assert await p.poll_once(session) == pytest.approx(453.59237)
    assert await p.poll_once(session) == pytest.approx(453.59237)
    paths = [(r.path, r.headers.get("Authorization", "")[:6]) for r in api.requests]
    assert [x for x, _ in paths] == [
        "/login",
        "/v3/forecast",
        "/v3/forecast",
        "/login",
        "/v3/forecast",
    ]
    assert api.requests[-1].headers["Authorization"] == "Bearer tok-2"


def status(code: int, headers: dict[str, str] | None = None) -> Handler:
    return lambda r: web.json_response({"message": "no"}, status=code, headers=headers)


async def slow(r: web.Request) -> web.Response:
    await asyncio.sleep(2.0)
    return web.json_response(EMAPS)


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (status(401), grid.AUTH),
        (status(403), grid.AUTH),
        (status(429, {"Retry-After": "120"}), grid.RATE_LIMITED),
        (status(500), grid.HTTP),
        (slow, grid.TIMEOUT),
        (lambda r: web.Response(text="<html>maintenance</html>"), grid.GARBAGE),
        (lambda r: web.json_response({"carbonIntensity": "high"}), grid.GARBAGE),
        (lambda r: web.json_response({"zone": "DE"}), grid.GARBAGE),
        (lambda r: web.json_response([1, 2]), grid.GARBAGE),
        (lambda r: web.json_response({"carbonIntensity": -5}), grid.GARBAGE),
        (lambda r: web.json_response({"carbonIntensity": 1e9}), grid.GARBAGE),
        # Hostile answers that escaped poll_once and ended the poller for good:
        # RecursionError (deep JSON), OverflowError (an int past any float).
        (lambda r: web.Response(text="[" * 100_000 + "]" * 100_000), grid.GARBAGE),
        (lambda r: web.Response(text='{"carbonIntensity": 1' + "0" * 400 + "}"), grid.GARBAGE),
        # Over the 1 MiB bound: said as such, not "not JSON".
        (
            lambda r: web.json_response({"carbonIntensity": 300, "pad": "x" * (1 << 20)}),
            grid.GARBAGE,
        ),
    ],
)
async def test_failures_keep_the_last_good_value_and_count_the_reason(
    api: FakeApi,
    session: aiohttp.ClientSession,
    token_file: Path,
    handler: Handler,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = poller(api, "electricitymaps", token_file)
    api.handler = lambda r: web.json_response(EMAPS)
    assert await p.poll_once(session) == 302.0
    api.handler = handler
    with caplog.at_level(logging.DEBUG, logger="jouled.cost.grid"):
        assert await p.poll_once(session) is None
    s = p.status()
    assert s.errors == {reason: 1} and not s.up
    assert p.current(0, 0)[0] == 302.0  # the cache stands
    assert "the last good value stands" in caplog.text
    assert TOKEN not in caplog.text
    if reason == grid.RATE_LIMITED:
        assert p.next_delay_s() >= 120.0


async def test_static_fallback_before_any_answer_and_after_max_age(
    api: FakeApi, session: aiohttp.ClientSession, token_file: Path
) -> None:
    clock = FakeClock(start_monotonic=100.0)
    cfg = GridProviderConfig(
        provider="electricitymaps",
        zone="DE",
        token_file=token_file,
        url=api.url,
        timeout=0.5,
        max_age=600,
        fallback=321.0,
    )
    p = GridPoller(cfg, clock)
    api.handler = status(503)
    await p.poll_once(session)
    clock.advance(30)
    # Never a good answer: the fallback, as old as the poller.
    assert p.current(0, clock.monotonic()) == (321.0, 30.0)
    api.handler = lambda r: web.json_response(EMAPS)
    await p.poll_once(session)
    clock.advance(599)
    assert p.current(0, clock.monotonic()) == (302.0, 599.0)
    clock.advance(2)
    assert p.current(0, clock.monotonic()) == (321.0, 601.0)
    # The fallback is a bare number: its provenance says so, not the provider's.
    assert p.provenance(clock.monotonic()) == Provenance("fallback", "DE", "unstated", "unstated")


# --- provenance: what kind of factor each provider's answer is ---
async def test_electricity_maps_says_lifecycle_by_default_and_direct_when_asked(
    api: FakeApi, session: aiohttp.ClientSession, token_file: Path
) -> None:
    # Electricity Maps v3: `emissionFactorType` is "lifecycle" unless the request asks for
    # `emissionFactorType=direct` (operational); the answer says which it sent.
    api.handler = lambda r: web.json_response(EMAPS)
    p = poller(api, "electricitymaps", token_file)
    await p.poll_once(session)
    assert "emissionFactorType" not in api.requests[0].query
    assert p.provenance(p._clock.monotonic()) == Provenance(
        "electricitymaps", "DE", "average", "lifecycle"
    )
    direct = {**EMAPS, "carbonIntensity": 255, "emissionFactorType": "direct"}
    api.handler = lambda r: web.json_response(direct)
    p = poller(api, "electricitymaps", token_file, boundary="operational")
    assert await p.poll_once(session) == 255.0
    assert api.requests[-1].query["emissionFactorType"] == "direct"
    assert p.provenance(p._clock.monotonic()).boundary == "operational"
    # An answer that says lifecycle wins over what was asked (it is what was sent).
    api.handler = lambda r: web.json_response(EMAPS)
    await p.poll_once(session)
    assert p.provenance(p._clock.monotonic()).boundary == "lifecycle"


async def test_uk_and_watttime_provenance_from_their_documentation(
    api: FakeApi, session: aiohttp.ClientSession, token_file: Path
) -> None:
    api.handler = lambda r: web.json_response(UK)
    uk = poller(api, "uk_national_grid", None)
    await uk.poll_once(session)
    assert uk.provenance(uk._clock.monotonic()) == Provenance(
        "uk_national_grid", "GB", "average", "operational"
    )
    # WattTime v3 (WattTime/aer-test-docs transition.md): co2_moer is the marginal operating
    # emissions rate; meta carries the region, model date and data point period.
    answer = {
        "data": [{"point_time": "2025-01-01T10:00:00+00:00", "value": 900.0}],
        "meta": {
            **WATTTIME["meta"],
            "model": {"date": "2023-08-24"},
            "data_point_period_seconds": 300,
            "generated_at": "2025-01-01T09:58:00+00:00",
            "generated_at_period_seconds": 300,
            "warnings": [],
        },
    }
    api.handler = lambda r: web.json_response(answer)
    wt = poller(api, "watttime", token_file)
    assert await wt.poll_once(session) == pytest.approx(900 * 0.45359237)
    assert wt.provenance(wt._clock.monotonic()) == Provenance(
        "watttime", "DE", "marginal", "operational"
    )


def test_the_cost_stage_books_the_providers_provenance(token_file: Path) -> None:
    cfg = config.validate(
        {
            "cost": {
                "grid_intensity": {
                    "provider": "watttime",
                    "zone": "CAISO_NORTH",
                    "token_file": str(token_file),
                }
            }
        },
        "t",
    ).cost
    assert isinstance(cfg.grid_intensity, GridProviderConfig)
    clock = FakeClock()
    grid_poller = GridPoller(cfg.grid_intensity, clock)
    stage = CostStage(cfg, grid_poller)
    c = stage.on_tick(tick(1, {("cpu", "rapl"): 3600.0}), snapshot(None))
    # No answer yet: the fallback stands, and the books say so.
    assert (c.factors.provider, c.factors.factor_type) == ("fallback", "unstated")
    grid_poller._value, grid_poller._value_mono = 400.0, clock.monotonic()
    c = stage.on_tick(tick(2, {("cpu", "rapl"): 3600.0}), snapshot(None))
    assert (c.factors.provider, c.factors.zone, c.factors.factor_type) == (
        "watttime",
        "CAISO_NORTH",
        "marginal",
    )


async def test_unreachable_provider_and_missing_token_file(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    dead = FakeApi()
    with socket_closed_port() as port:
        dead.url = f"http://127.0.0.1:{port}"
    p = poller(dead, "uk_national_grid", None)
    assert await p.poll_once(session) is None
    assert p.status().errors == {grid.NETWORK: 1}
    p = poller(dead, "electricitymaps", tmp_path / "missing")
    assert await p.poll_once(session) is None
    assert p.status().errors == {grid.TOKEN: 1}
    # The token file is read on the event loop at each poll: a FIFO there froze the daemon
    # (the read waited for a writer), and a non-UTF-8 byte raised past poll_once.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    bad = tmp_path / "latin1"
    bad.write_bytes(b"caf\xe9\n")
    for path in (fifo, bad):
        p = poller(dead, "electricitymaps", path)
        assert await asyncio.wait_for(p.poll_once(session), 2.0) is None
        assert p.status().errors == {grid.TOKEN: 1}


class socket_closed_port:
    """A loopback port nothing listens on (bound, read, released)."""

    def __enter__(self) -> int:
        import socket

        self._s = socket.socket()
        self._s.bind(("127.0.0.1", 0))
        return int(self._s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._s.close()


def test_backoff_doubles_from_the_interval_caps_at_an_hour_and_honours_retry_after() -> None:
    assert grid.backoff_s(0, 300) == 300
    assert [grid.backoff_s(n, 300) for n in (1, 2, 3, 4, 5, 6)] == [
        300,
        600,
        1200,
        2400,
        3600,
        3600,
    ]
    assert grid.backoff_s(1, 10, retry_after_s=90) == 90
    assert grid.backoff_s(50, 7200) == 7200  # never faster than the interval


async def test_run_loop_polls_then_backs_off(api: FakeApi, token_file: Path) -> None:
    answers = iter([200, 500, 500, 200])
    api.handler = lambda r: web.json_response(EMAPS) if next(answers) == 200 else status(500)(r)
    delays: list[float] = []
    done = asyncio.Event()

    async def fake_sleep(s: float) -> None:
        delays.append(s)
        if len(delays) == 4:
            done.set()
            await asyncio.Event().wait()  # park until cancelled

    cfg = GridProviderConfig(
        provider="electricitymaps", zone="DE", token_file=token_file, url=api.url, interval=10
    )
    p = GridPoller(cfg, FakeClock(), sleep=fake_sleep, jitter=lambda: 0.0)
    task = asyncio.ensure_future(p.run())
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert delays == [10, 10, 20, 10]
    assert p.status().errors == {grid.HTTP: 2} and p.status().up


def test_token_is_in_no_repr_status_or_metric(token_file: Path) -> None:
    cfg = GridProviderConfig(
        provider="electricitymaps", zone="DE", token_file=token_file, url="http://127.0.0.1:1"
    )
    p = GridPoller(cfg, FakeClock())
    assert TOKEN not in repr(p.provider.__dict__)
    registry = CollectorRegistry()
    registry.register(CostCollector(lambda: EMPTY, grid=p.status))
    text = generate_latest(registry).decode()
    assert 'jouled_grid_provider_up{provider="electricitymaps"} 0.0' in text
    assert TOKEN not in text


def test_provider_error_carries_reason() -> None:
    e = ProviderError(grid.RATE_LIMITED, "HTTP 429", 5.0)
    assert (e.reason, e.retry_after_s, str(e)) == ("rate_limited", 5.0, "HTTP 429")


def test_retries_are_jittered_longer_never_shorter() -> None:
    # A fleet that failed together must not retry in lockstep: up to a quarter longer.
    assert grid.backoff_s(2, 300, jitter=0.0) == 600
    assert grid.backoff_s(2, 300, jitter=0.5) == 675
    assert grid.backoff_s(2, 300, jitter=0.999) < 750
    assert grid.backoff_s(1, 10, retry_after_s=90, jitter=0.2) == 90 * 1.05  # after Retry-After
    assert grid.backoff_s(0, 300, jitter=0.9) == 300  # success: the interval, unjittered


async def test_an_unexpected_error_in_a_provider_fails_one_poll_not_the_poller(
    session: aiohttp.ClientSession,
) -> None:
    class Broken:
        name = "electricitymaps"
        boundary = None
        calls = 0

        async def fetch(self, session: aiohttp.ClientSession) -> float:
            self.calls += 1
            if self.calls == 1:
                raise KeyError("a shape nobody foresaw")
            return 250.0

    cfg = GridProviderConfig(provider="uk_national_grid", timeout=0.5, fallback=475.0)
    p = GridPoller(cfg, FakeClock(), provider=Broken())
    assert await p.poll_once(session) is None
    assert p.status().errors == {grid.GARBAGE: 1}
    assert await p.poll_once(session) == 250.0


async def test_an_answer_sent_in_several_writes_is_read_whole(
    api: FakeApi, session: aiohttp.ClientSession, token_file: Path
) -> None:
    """StreamReader.read(n) returns what has arrived: a JSON answer in two writes was cut
    after the first and counted as garbage."""
    body = json.dumps(EMAPS).encode()

    async def in_two(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(body[:20])
        await asyncio.sleep(0.05)
        await resp.write(body[20:])
        await resp.write_eof()
        return resp

    api.handler = in_two
    assert await poller(api, "electricitymaps", token_file).poll_once(session) == 302.0


async def test_the_daemons_poller_verifies_an_https_provider_with_the_bundle_read_when_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token_file: Path
) -> None:
    """The daemon imports aiohttp without the CA bundle (jouled/tls.py), so aiohttp's default
    context trusts no one; the poller's own session reads the bundle when it starts. Here
    the bundle is a test CA's, named after aiohttp was imported (its default context cannot
    know it), so only the poller's own context lets the read through; a provider whose
    certificate another CA signed is refused."""
    import ssl

    import trustme

    trusted, stranger = trustme.CA(), trustme.CA()
    bundle = tmp_path / "ca.pem"
    trusted.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    got: dict[str, GridPoller] = {}
    for name, ca in (("trusted", trusted), ("stranger", stranger)):
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
        app = web.Application()

        async def answer(_r: web.Request) -> web.Response:
            return web.json_response(EMAPS)

        app.router.add_route("GET", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        host, port = runner.addresses[0][:2]
        polled = asyncio.Event()

        async def parked(_s: float, polled: asyncio.Event = polled) -> None:
            polled.set()
            await asyncio.Event().wait()  # until cancelled

        cfg = GridProviderConfig(
            provider="electricitymaps",
            zone="DE",
            token_file=token_file,
            url=f"https://{host}:{port}",
            fallback=475.0,
        )
        p = got[name] = GridPoller(cfg, FakeClock(), sleep=parked, jitter=lambda: 0.0)
        task = asyncio.ensure_future(p.run())
        await asyncio.wait_for(polled.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await runner.cleanup()
    assert got["trusted"].status().up and got["trusted"].status().errors == {}
    assert not got["stranger"].status().up
    assert got["stranger"].status().errors == {grid.NETWORK: 1}
