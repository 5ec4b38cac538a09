"""The daemon reading hostile inference servers' /metrics (server-metrics mode) over real
loopback HTTP: a gzip bomb, a page trickling bytes (was read as its first byte: aiohttp's
``read(n)`` returns what has arrived), a page of other families, a redirect to another host
(jouled's own /metrics), jouled's own page relayed, a server that never answers. Each is
marked down with its reason within a few ticks, /healthz answers 200 throughout, and a
well-behaved workload's server next to them keeps being read."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.hostile.conftest import RunningFactory
from tests.support.server_pages import VllmReplay

SELF: dict[str, str] = {}  # the daemon's own /metrics URL, once it listens


def bomb() -> bytes:
    """~255 KB of gzip that inflate to 256 MiB."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * (1 << 20)
    return b"".join(deflater.compress(chunk) for _ in range(256)) + deflater.flush()


@pytest.fixture
async def hostile_servers() -> AsyncIterator[str]:
    replay = VllmReplay(["llama"])
    gz = bomb()

    async def good(_r: web.Request) -> web.Response:
        replay.serve("llama", 10, 5)
        return web.Response(text=replay.page())

    async def gzip_bomb(_r: web.Request) -> web.Response:
        return web.Response(body=gz, headers={"Content-Encoding": "gzip"})

    async def trickle(r: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(r)
        with contextlib.suppress(ConnectionResetError):  # jouled hangs up at its timeout
            for _ in range(400):
                await resp.write(b"#")
                await asyncio.sleep(0.05)
        return resp

    async def junk(_r: web.Request) -> web.Response:
        lines = "".join(f'junk_total{{i="{i}"}} {i}\n' for i in range(30_000))
        return web.Response(text="# TYPE junk_total counter\n" + lines)

    async def to_self(_r: web.Request) -> web.Response:
        raise web.HTTPFound(SELF["url"])

    async def own_page(_r: web.Request) -> web.Response:  # jouled's own /metrics, relayed
        async with aiohttp.ClientSession() as http, http.get(SELF["url"]) as resp:
            return web.Response(body=await resp.read())

    async def hang(_r: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="")

    app = web.Application()
    for path, handler in [
        ("/good", good),
        ("/bomb", gzip_bomb),
        ("/trickle", trickle),
        ("/junk", junk),
        ("/self", to_self),
        ("/own", own_page),
        ("/hang", hang),
    ]:
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_hostile_servers_are_marked_down_and_the_daemon_keeps_answering(
    daemon_at: RunningFactory, hostile_servers: str
) -> None:
    names = ["good", "bomb", "trickle", "junk", "self", "own", "hang"]
    workloads = [
        {
            "name": n,
            "match": {"pid": 1},
            "server_metrics": {"url": f"{hostile_servers}/{n}", "max_body_bytes": 1 << 20},
        }
        for n in names
    ]
    async with daemon_at(interval=1.0, workloads=workloads) as r, aiohttp.ClientSession() as http:
        SELF["url"] = r.metrics_url + "/metrics"
        health = []
        for _ in range(30):  # 3 s: three ticks and their reads
            health.append((await r.healthz(http))[0])
            await asyncio.sleep(0.1)
        assert r.daemon.sampler is not None
        section = r.daemon.sampler.snapshot.server_metrics
        assert section is not None
        status = section.status
    assert set(health) == {200}
    assert status["good"].up and status["good"].servers == ("vllm",)
    assert "over server_metrics.max_body_bytes" in status["bomb"].error
    assert status["trickle"].error == "no answer within 0.5s"
    assert status["hang"].error == "no answer within 0.5s"
    assert "no token or request counters" in status["junk"].error
    assert "redirects to another host" in status["self"].error
    assert "no token or request counters" in status["own"].error
    assert not any(status[n].up for n in names[1:])
