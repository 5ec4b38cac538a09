"""The server-metrics stage against replayed servers over real loopback HTTP: energy split by
model, books exact, restarts, a server that is down or hangs never holds the tick."""

from __future__ import annotations

import asyncio
import math
import ssl
from dataclasses import dataclass, replace
from typing import Any

# aiohttp's default TLS contexts are built at its import: here, before a test sets
# SSL_CERT_FILE, as in the daemon (they must not learn a test's CA).
import aiohttp.connector  # noqa: F401
import pytest
import trustme

from jouled.attribution.server_stage import ServerMetricsStage
from jouled.clock import FakeClock
from jouled.config import ServerMetricsConfig, validate
from jouled.pipeline.server_metrics import ServerMetricsSnapshot
from jouled.pipeline.snapshot import EMPTY, frozen
from jouled.pipeline.tick import Tick
from tests.support.server_pages import Replay, TgiReplay, Totals, VllmReplay, serving


@dataclass
class Attribution:
    """The one field the stage reads from the attribution section."""

    workload_energy_j: dict[tuple[str, str, str], float]


class Driver:
    """Ticks the stage as the sampler would: cumulative workload energy in, a tick out."""

    def __init__(self, stage: ServerMetricsStage, clock: FakeClock, workload: str) -> None:
        self.stage = stage
        self.clock = clock
        self.workload = workload
        self.cpu = 0.0
        self.gpu = 0.0
        self.seq = 0
        self.given = 0.0  # joules handed to the stage after its baseline tick

    async def settle(self) -> None:
        """Let the read the last tick started finish (a real tick comes 1 s later)."""
        for _ in range(200):
            if all(s.task is None or s.task.done() for s in self.stage._servers.values()):
                return
            await asyncio.sleep(0.01)

    async def tick(self, joules: float) -> ServerMetricsSnapshot:
        """One tick; the read it starts has finished when this returns, so the server's
        work up to here is seen at the next tick."""
        if self.seq:
            self.cpu += joules * 0.75
            self.gpu += joules * 0.25
            self.given += joules
        self.seq += 1
        self.clock.advance(1.0)
        w1 = self.clock.time()
        tick = Tick(self.seq, 0.0, 1.0, w1 - 1.0, w1, frozen({}), frozen({}), frozen({}))
        parts = {
            (self.workload, "cpu", "rapl"): self.cpu,
            (self.workload, "gpu", "nvml"): self.gpu,
        }
        snap = replace(EMPTY, attribution=Attribution(parts))  # type: ignore[arg-type]
        out = self.stage.on_tick(tick, snap)
        await self.settle()
        return out


def config(url: str, **extra: Any) -> Any:
    return validate(
        {
            "interval": 1.0,
            "workloads": [
                {
                    "name": "chat",
                    "match": {"pid": 1},
                    "server_metrics": {"url": url, "timeout": 0.5, **extra},
                }
            ],
        },
        "test",
    )


def books(s: ServerMetricsSnapshot, workload: str) -> float:
    models = [j for (w, _m), j in s.model_energy_j.items() if w == workload]
    return math.fsum([*models, s.unserved_j[workload], s.pending_j[workload]])


async def test_energy_goes_to_models_by_their_tokens_and_the_books_balance() -> None:
    replay = VllmReplay(["llama", "phi"])
    clock = FakeClock()
    with serving(replay) as url:
        stage = ServerMetricsStage(config(url), clock)
        d = Driver(stage, clock, "chat")
        await d.tick(0.0)  # baseline tick; the baseline read follows it
        await d.tick(10.0)  # the baseline read: no work yet, 10 J wait
        replay.serve("llama", 300, 100)  # 400 tokens
        replay.serve("phi", 80, 20)  # 100 tokens
        await d.tick(10.0)  # the read before these requests: still no work, 20 J wait
        s = await d.tick(20.0)  # now the work: the 40 J split 4:1
        later = await d.tick(30.0)  # no new work: 30 J wait for the next
        await stage.close()
    assert s.model_energy_j[("chat", "llama")] == pytest.approx(32.0)
    assert s.model_energy_j[("chat", "phi")] == pytest.approx(8.0)
    assert s.pending_j["chat"] == 0.0 and s.unserved_j["chat"] == 0.0
    assert later.pending_j["chat"] == pytest.approx(30.0)
    assert books(later, "chat") == pytest.approx(d.given, rel=1e-12)
    assert s.tokens[("chat", "llama", "input")] == 300
    assert s.tokens[("chat", "llama", "output")] == 100
    assert s.requests[("chat", "phi")] == 1
    assert s.status["chat"].up and s.status["chat"].servers == ("vllm",)


def tls_server(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


def trust_only(ca: trustme.CA, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The system's CA bundle, as OpenSSL finds it, becomes ``ca`` alone."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))


async def test_an_https_page_is_verified_against_the_ca_bundle_read_when_first_needed(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon imports aiohttp without the CA bundle (jouled/tls.py), so aiohttp's default
    context trusts no one; the stage reads the bundle itself at its first https read. Here
    the bundle is a test CA's (SSL_CERT_FILE, set after aiohttp was imported: its default
    context cannot know this CA), so only the stage's own context lets the read through."""
    ca = trustme.CA()
    trust_only(ca, tmp_path, monkeypatch)
    replay, clock = VllmReplay(["llama"]), FakeClock()
    with serving(replay, tls=tls_server(ca)) as url:
        assert url.startswith("https://127.0.0.1:")
        stage = ServerMetricsStage(config(url), clock)
        d = Driver(stage, clock, "chat")
        await d.tick(0.0)
        await d.tick(10.0)
        replay.serve("llama", 300, 100)
        await d.tick(10.0)
        s = await d.tick(20.0)
        await stage.close()
    assert s.status["chat"].up, s.status["chat"]
    assert s.model_energy_j[("chat", "llama")] == pytest.approx(40.0)
    assert books(s, "chat") == pytest.approx(d.given, rel=1e-12)


async def test_an_https_page_whose_certificate_no_trusted_ca_signed_is_not_read(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_only(trustme.CA(), tmp_path, monkeypatch)
    replay, clock = VllmReplay(["llama"]), FakeClock()
    with serving(replay, tls=tls_server(trustme.CA())) as url:
        stage = ServerMetricsStage(config(url), clock)
        d = Driver(stage, clock, "chat")
        await d.tick(0.0)
        s = await d.tick(10.0)
        await stage.close()
    assert not s.status["chat"].up
    assert "certificate verify failed" in s.status["chat"].error, s.status["chat"]


RATE = {"big": 9.0, "small": 1.0}  # GFLOPs per token of the models with a config


@pytest.mark.parametrize(("cap", "small"), [(50, "small"), (1, "other")])
async def test_a_model_config_turns_tokens_into_gflops(cap: int, small: str) -> None:
    """Same tokens, 9x the GFLOPs per token: 90 % of the energy. Past the cap too: "other"
    has no config, and splitting by it costed every model by tokens (50/50)."""
    replay = VllmReplay(["big", "small"])
    clock = FakeClock()
    with serving(replay) as url:
        cfg = config(url)
        spans = cfg.spans.model_copy(update={"max_models_per_workload": cap})
        stage = ServerMetricsStage(
            cfg.model_copy(update={"spans": spans}),
            clock,
            gflops_of=lambda m, p, n, r: (p + n) * RATE[m] if m in RATE else None,
        )
        d = Driver(stage, clock, "chat")
        await d.tick(0.0)
        await d.tick(0.0)
        replay.serve("big", 50, 50)
        replay.serve("small", 50, 50)
        await d.tick(0.0)
        s = await d.tick(100.0)
        await stage.close()
    assert s.model_energy_j[("chat", "big")] == pytest.approx(90.0)
    assert s.model_energy_j[("chat", small)] == pytest.approx(10.0)
    assert s.tokens[("chat", small, "input")] == 50


async def test_a_restart_is_counted_and_tokens_after_it_are_not_lost() -> None:
    replay = TgiReplay(["mistral"])
    clock = FakeClock()
    with serving(replay) as url:
        stage = ServerMetricsStage(config(url, model="mistral-7b"), clock)
        d = Driver(stage, clock, "chat")
        await d.tick(0.0)
        replay.serve("mistral", 1000, 500)
        await d.tick(5.0)  # the baseline read, before the request
        await d.tick(5.0)  # 1,500 tokens: 10 J
        replay.restart()
        replay.serve("mistral", 10, 7)
        await d.tick(5.0)  # the read before the restart: 5 J wait
        s = await d.tick(5.0)  # counters went down: the 17 tokens count, 10 J
        await stage.close()
    assert s.resets["chat"] == 1
    assert s.tokens[("chat", "mistral-7b", "input")] == 1010
    assert s.tokens[("chat", "mistral-7b", "output")] == 507
    assert s.requests[("chat", "mistral-7b")] == 2
    assert books(s, "chat") == pytest.approx(d.given, rel=1e-12)
    assert s.model_energy_j[("chat", "mistral-7b")] == pytest.approx(20.0)


async def test_a_server_that_is_down_is_marked_and_its_energy_becomes_unserved() -> None:
    replay = VllmReplay(["llama"])
    clock = FakeClock()
    with serving(replay) as url:
        pass  # the port is closed again: connection refused
    stage = ServerMetricsStage(config(url, carry_seconds=2), clock)
    d = Driver(stage, clock, "chat")
    for _ in range(6):
        s = await d.tick(3.0)
    await stage.close()
    assert not s.status["chat"].up
    assert "Connect" in s.status["chat"].error or "refused" in s.status["chat"].error
    assert s.model_energy_j == {}
    # Energy older than carry_seconds (2 s) is unserved; the newest ticks still wait.
    assert s.unserved_j["chat"] == pytest.approx(9.0)
    assert s.pending_j["chat"] == pytest.approx(6.0)
    assert books(s, "chat") == pytest.approx(d.given)


async def test_a_hanging_server_never_holds_the_tick() -> None:
    clock = FakeClock()
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def hang(_cfg: ServerMetricsConfig) -> str:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return ""

    stage = ServerMetricsStage(config("http://127.0.0.1:1/metrics"), clock, fetch=hang)
    stage.on_tick(Tick(1, 0.0, 1.0, 0.0, 1.0, frozen({}), frozen({}), frozen({})), EMPTY)
    await started.wait()
    # on_tick is synchronous: while the read hangs, ticks go on and no second read starts.
    tick = Tick(99, 0.0, 1.0, 0.0, 1.0, frozen({}), frozen({}), frozen({}))
    for _ in range(3):
        stage.on_tick(tick, EMPTY)
    assert calls == 1
    await asyncio.sleep(0.6)  # past the 0.5 s timeout
    s = stage.on_tick(tick, EMPTY)
    assert not s.status["chat"].up
    assert s.status["chat"].error == "no answer within 0.5s"
    release.set()
    await stage.close()


async def test_a_reload_keeps_totals_and_the_books() -> None:
    replay = VllmReplay(["llama"])
    clock = FakeClock()
    with serving(replay) as url:
        cfg = config(url)
        stage = ServerMetricsStage(cfg, clock)
        d = Driver(stage, clock, "chat")
        await d.tick(0.0)
        await d.tick(0.0)
        replay.serve("llama", 10, 10)
        await d.tick(0.0)
        await d.tick(4.0)
        stage.reconfigure(cfg.model_copy(update={"interval": 2.0}))  # same servers
        s = await d.tick(0.0)
        # A new server config (another timeout): a new baseline read, the books carry on.
        changed = config(url, timeout=0.4)
        stage.reconfigure(changed)
        await d.tick(3.0)  # 3 J wait: the new server's first read is a baseline
        moved = await d.tick(2.0)
        stage.reconfigure(cfg.model_copy(update={"workloads": ()}))
        gone = await d.tick(1.0)
        await stage.close()
    assert s.model_energy_j[("chat", "llama")] == pytest.approx(4.0)
    assert moved.pending_j["chat"] == pytest.approx(5.0)
    assert books(moved, "chat") == pytest.approx(d.given - 1.0)
    assert gone.workloads == frozenset()
    assert gone.model_energy_j[("chat", "llama")] == pytest.approx(4.0)  # totals stay
    # What waited when the workload left its server-metrics mode counts as unserved.
    assert gone.unserved_j["chat"] == pytest.approx(5.0)


async def test_a_page_slow_to_parse_holds_further_reads_not_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    import jouled.attribution.server_stage as stage_mod

    release = threading.Event()
    real_parse = stage_mod.parse_page

    def slow_parse(text: str, *, default_model: str) -> Any:
        release.wait(10)
        return real_parse(text, default_model=default_model)

    monkeypatch.setattr(stage_mod, "parse_page", slow_parse)
    calls = 0
    page = VllmReplay(["m"]).page()

    async def fetch(_cfg: ServerMetricsConfig) -> str:
        nonlocal calls
        calls += 1
        return page

    stage = ServerMetricsStage(config("http://127.0.0.1:1/metrics"), FakeClock(), fetch=fetch)
    tick = Tick(1, 0.0, 1.0, 0.0, 1.0, frozen({}), frozen({}), frozen({}))
    stage.on_tick(tick, EMPTY)
    await asyncio.sleep(0.7)  # past the 0.5 s timeout; the parse thread still runs
    s = stage.on_tick(tick, EMPTY)
    assert s.status["chat"].error == "no answer within 0.5s"
    for _ in range(3):
        stage.on_tick(tick, EMPTY)
        await asyncio.sleep(0.05)
    assert calls == 1  # no new read while that page is being parsed
    release.set()
    await asyncio.sleep(0.1)
    stage.on_tick(tick, EMPTY)
    await asyncio.sleep(0.2)
    s = stage.on_tick(tick, EMPTY)
    assert calls == 2 and s.status["chat"].up
    await stage.close()


class NewModelsEachRead(Replay):
    """vLLM's token counters (``vllm/v1/metrics/loggers.py``) for models that come and go:
    ``serve`` adds a model the first time it is named."""

    def serve_all(self, requests: list[tuple[str, int, int]]) -> None:
        for model, _p, _g in requests:
            self.totals.setdefault(model, Totals())
        super().serve_all(requests)

    def page(self) -> str:
        lines = []
        for family, field in (("prompt_tokens", "input"), ("generation_tokens", "output")):
            lines.append(f"# TYPE vllm:{family}_total counter")
            lines += [
                f'vllm:{family}_total{{engine="0",model_name="{m}"}} {getattr(t, field)}'
                for m, t in self.totals.items()
            ]
        return "\n".join(lines) + "\n"


async def test_a_server_naming_new_models_each_read_gets_at_most_the_cap_in_series() -> None:
    """Models per workload are capped for the daemon's life (spans.max_models_per_workload),
    as spans are, not per read: a page naming 3 new models every read grew 3 series a read."""
    replay = NewModelsEachRead([])
    replay.serve("warm-up", 1, 1)  # before the baseline read: takes no place under the cap
    clock = FakeClock()
    with serving(replay) as url:
        cfg = config(url)
        spans = cfg.spans.model_copy(update={"max_models_per_workload": 4})
        stage = ServerMetricsStage(cfg.model_copy(update={"spans": spans}), clock)
        d = Driver(stage, clock, "chat")
        await d.tick(0.0)
        await d.tick(3.0)
        for r in range(6):
            replay.serve_all([(f"m{r}-{i}", 10 * (i + 1), 1) for i in range(3)])
            await d.tick(3.0)
        s = await d.tick(3.0)
        await stage.close()
    models = {m for (w, m) in s.model_energy_j if w == "chat"}
    assert models == {"m0-0", "m0-1", "m0-2", "m1-2", "other"}  # the busiest first
    assert {m for (_w, m, _k) in s.tokens} == models
    assert {m for (_w, m) in s.requests} <= models
    assert books(s, "chat") == pytest.approx(d.given, rel=1e-12)
    # Every model's tokens are counted, past the cap as "other": 6 reads of 10+20+30.
    assert math.fsum(v for (_w, _m, k), v in s.tokens.items() if k == "input") == 6 * 60
    assert s.tokens[("chat", "other", "input")] == 6 * 60 - 60 - 30
