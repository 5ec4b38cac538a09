"""Reading inference servers' own /metrics pages: recognition, per-model sums, resets,
bounds, and the read over real loopback HTTP (pages replayed from each server's source)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from jouled.collectors.server_http import check_rows, fetch_page
from jouled.collectors.server_metrics import (
    CounterFollower,
    Counts,
    PageError,
    merge,
    parse_page,
)
from jouled.config import validate
from tests.support.loopback import http_server
from tests.support.server_pages import (
    REPLAYS,
    SglangReplay,
    TgiReplay,
    TritonReplay,
    VllmReplay,
    serving,
)

TYPE = "# TYPE vllm:prompt_tokens_total counter\n"
MODEL = {"vllm": "llama-3-8b", "sglang": "qwen2-7b", "tgi": "mistral-7b", "triton": "tensorrt_llm"}


def follow(replay_pages: list[str], default_model: str = "served") -> tuple[list, CounterFollower]:
    f = CounterFollower()
    return [f.advance(parse_page(p, default_model=default_model)) for p in replay_pages], f


@pytest.mark.parametrize("server", sorted(REPLAYS))
def test_each_servers_page_gives_its_tokens_and_requests_across_a_restart(server: str) -> None:
    replay = REPLAYS[server]([MODEL[server]])
    model = MODEL[server]
    pages = [replay.page()]  # baseline: the server has been running before jouled
    replay.serve(model, 512, 128)
    replay.serve(model, 40, 9)
    pages.append(replay.page())
    replay.restart()  # the server restarts: every counter starts over
    replay.serve(model, 100, 20)
    pages.append(replay.page())
    replay.serve(model, 8, 3)
    pages.append(replay.page())
    steps, follower = follow(pages, default_model=model)
    key = model
    assert steps[0] == {key: Counts()} or all(c == Counts() for c in steps[0].values())
    assert steps[1][key] == Counts(552, 137, 2)
    assert steps[2][key] == Counts(100, 20, 1)  # after the restart: counted from zero
    assert steps[3][key] == Counts(8, 3, 1)
    assert follower.resets == 1
    # The same totals as the server's own, summed over the reads.
    assert merge(steps)[key] == Counts(660, 160, 4)


def test_vllm_sums_engines_and_finish_reasons_per_model_name() -> None:
    replay = VllmReplay(["a", "b"])
    f = CounterFollower()
    f.advance(parse_page(replay.page(), default_model="x"))
    for i in range(5):
        replay.serve("a", 10, i)  # odd counts finish on "length", even on "stop"
    replay.serve("b", 1000, 1)
    page = parse_page(replay.page(), default_model="x")
    assert page.servers == {"vllm"}
    assert {s.key[0] for s in page.series} == {
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
    }
    assert f.advance(page) == {"a": Counts(50, 10, 5), "b": Counts(1000, 1, 1)}


def test_triton_counts_requests_of_every_ensemble_member_and_tokens_of_the_llm() -> None:
    replay = TritonReplay(["tensorrt_llm"])
    f = CounterFollower()
    f.advance(parse_page(replay.page(), default_model="x"))
    replay.serve("tensorrt_llm", 64, 32)
    got = f.advance(parse_page(replay.page(), default_model="x"))
    assert got["tensorrt_llm"] == Counts(64, 32, 1)
    assert got["ensemble"] == Counts(0, 0, 1)


def without_created(text: str) -> str:
    """The page as a server started with PROMETHEUS_DISABLE_CREATED_SERIES writes it (the
    replays below stand for one server process, so their creation times must not differ)."""
    return "".join(line for line in text.splitlines(keepends=True) if "_created" not in line)


def test_a_series_first_seen_after_the_baseline_counts_from_zero() -> None:
    f = CounterFollower()
    f.advance(parse_page(without_created(SglangReplay(["a"]).page()), default_model="x"))
    later = SglangReplay(["a", "b"])
    later.serve("b", 7, 2)
    page = parse_page(without_created(later.page()), default_model="x")
    assert f.advance(page)["b"] == Counts(7, 2, 1)
    assert f.resets == 0


def test_a_series_missing_from_one_page_is_not_counted_twice() -> None:
    both = VllmReplay(["a", "b"])
    both.serve("b", 100, 10)
    only_a = VllmReplay(["a"])
    f = CounterFollower()
    f.advance(parse_page(without_created(both.page()), default_model="x"))
    f.advance(parse_page(without_created(only_a.page()), default_model="x"))
    both.serve("b", 1, 1)
    assert f.advance(parse_page(without_created(both.page()), default_model="x"))["b"] == Counts(
        1, 1, 1
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# TYPE node_cpu_seconds_total counter\nnode_cpu_seconds_total 5\n", "no token"),
        ("", "no token"),
        ('vllm:prompt_tokens_total{model_name="m"} not-a-number\n', "not Prometheus"),
        (
            f'{TYPE}vllm:prompt_tokens_total{{model_name="m"}} -3\n',
            "finite and >= 0",
        ),
        (
            f'{TYPE}vllm:prompt_tokens_total{{model_name="m"}} NaN\n',
            "finite and >= 0",
        ),
    ],
)
def test_pages_that_cannot_be_used_say_why(text: str, message: str) -> None:
    with pytest.raises(PageError, match=message):
        parse_page(text, default_model="x")


def test_the_number_of_series_read_from_one_page_is_bounded() -> None:
    lines = ["# TYPE sglang:num_requests_total counter"]
    lines += [f'sglang:num_requests_total{{model_name="m{i}"}} 1' for i in range(50)]
    with pytest.raises(PageError, match="more than 20"):
        parse_page("\n".join(lines) + "\n", default_model="x", max_series=20)


async def test_a_page_over_the_size_limit_or_an_error_status_is_refused() -> None:
    big = "# TYPE tgi_request_success counter\ntgi_request_success 1\n" + "#" * 5000 + "\n"

    async def metrics(request: web.Request) -> web.Response:
        if request.query.get("fail"):
            return web.Response(status=503, text="loading")
        return web.Response(text=big)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async with TestServer(app, host="127.0.0.1") as srv, aiohttp.ClientSession() as session:
        url = str(srv.make_url("/metrics"))
        text = await fetch_page(session, url, max_bytes=len(big))
        assert parse_page(text, default_model="m").series[0].value == 1
        with pytest.raises(PageError, match=r"over server_metrics\.max_body_bytes"):
            await fetch_page(session, url, max_bytes=4096)
        with pytest.raises(PageError, match="HTTP 503"):
            await fetch_page(session, url + "?fail=1", max_bytes=4096)


def test_jouled_check_reads_each_server_once_and_says_what_it_found(tmp_path: Path) -> None:
    replay = VllmReplay(["llama-3-8b"])
    with serving(replay) as url:
        cfg = validate(
            {
                "workloads": [
                    {"name": "chat", "match": {"pid": 1}, "server_metrics": url},
                    {
                        "name": "gone",
                        "match": {"pid": 1},
                        "server_metrics": {"url": "http://127.0.0.1:9/metrics", "timeout": 1},
                    },
                    {"name": "plain", "match": {"pid": 1}},
                ]
            },
            "test",
        )
        ok, down = check_rows(cfg.workloads)
    assert ok.readable and ok.collector == "server_metrics"
    assert ok.target == f"chat {url}"
    assert ok.detail == "vllm: input, output, requests of model(s) llama-3-8b"
    assert not down.readable and "cannot read" in down.detail
    assert "server_metrics.url" in down.fix


def test_counts_add_up_exactly_like_the_servers_totals() -> None:
    replay = VllmReplay(["m"])
    pages = [replay.page()]
    for i in range(30):
        replay.serve("m", 100 + i, 1 + i % 7)
        if i % 4 == 0:
            pages.append(replay.page())
    pages.append(replay.page())
    steps, _ = follow(pages)
    total = merge(steps)["m"]
    assert total.input == replay.totals["m"].input
    assert total.output == replay.totals["m"].output
    assert math.isclose(total.requests, 30)


def test_a_server_without_model_labels_takes_the_workloads_model_name() -> None:
    replay = TgiReplay(["m"])
    with serving(replay) as url:
        cfg = validate(
            {
                "workloads": [
                    {"name": "tgi", "match": {"pid": 1}, "model": "mistral-7b",
                     "server_metrics": url},
                    {"name": "named", "match": {"pid": 1}, "model": "ignored",
                     "server_metrics": {"url": url, "model": "zephyr-7b"}},
                    {"name": "bare", "match": {"pid": 1}, "server_metrics": url},
                ]
            },
            "test",
        )  # fmt: skip
        rows = check_rows(cfg.workloads)
    assert [r.detail.rsplit(" ", 1)[-1] for r in rows] == ["mistral-7b", "zephyr-7b", "bare"]


def test_a_restart_already_past_the_old_counts_is_seen_by_created_timestamps() -> None:
    # vLLM (prometheus-client) writes when each counter was created: a restart shows even
    # when every counter is back above its old value by the next read.
    vllm = VllmReplay(["m"])
    f = CounterFollower()
    f.advance(parse_page(vllm.page(), default_model="x"))
    vllm.serve("m", 10, 10)
    f.advance(parse_page(vllm.page(), default_model="x"))
    vllm.restart()
    vllm.serve("m", 100, 50)
    assert f.advance(parse_page(vllm.page(), default_model="x")) == {"m": Counts(100, 50, 1)}
    assert f.resets == 1
    # TGI writes no _created: the same restart is invisible (as to Prometheus's increase()),
    # and only the excess over the old counts is seen.
    tgi = TgiReplay(["m"])
    g = CounterFollower()
    g.advance(parse_page(tgi.page(), default_model="x"))
    tgi.serve("m", 10, 10)
    g.advance(parse_page(tgi.page(), default_model="x"))
    tgi.restart()
    tgi.serve("m", 100, 50)
    tgi.serve("m", 1, 1)
    assert g.advance(parse_page(tgi.page(), default_model="x")) == {"x": Counts(91, 41, 1)}
    assert g.resets == 0


MP_WORKER = """
import sys
from prometheus_client import Counter
labels = ["model_name", "engine"]
prompt = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels)
generation = Counter("vllm:generation_tokens", "Number of generation tokens processed.", labels)
success = Counter("vllm:request_success", "Count of successfully processed requests.",
                  [*labels, "finished_reason"])
engine, p, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
prompt.labels("llama", engine).inc(p)
generation.labels("llama", engine).inc(n)
success.labels("llama", engine, "stop").inc()
"""
MP_PAGE = (
    "from prometheus_client import CollectorRegistry, generate_latest, multiprocess\n"
    "r = CollectorRegistry(); multiprocess.MultiProcessCollector(r)\n"
    "print(generate_latest(r).decode(), end='')\n"
)


@pytest.mark.slow  # five Python processes
def test_vllm_in_prometheus_multiprocess_mode(tmp_path: Path) -> None:
    # vLLM with several API servers sets PROMETHEUS_MULTIPROC_DIR
    # (vllm/v1/metrics/prometheus.py, setup_multiprocess_prometheus) and serves what
    # prometheus-client's MultiProcessCollector merges from every process: no _created
    # samples. Real processes write the files here, as vLLM's do.
    import os
    import subprocess
    import sys

    def page(directory: Path, requests: list[tuple[str, int, int]]) -> str:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
        for engine, p, n in requests:
            subprocess.run(
                [sys.executable, "-c", MP_WORKER, engine, str(p), str(n)], env=env, check=True
            )
        out = subprocess.run(
            [sys.executable, "-c", MP_PAGE], env=env, check=True, capture_output=True, text=True
        )
        return out.stdout

    first = tmp_path / "run1"
    first.mkdir()
    f = CounterFollower()
    f.advance(parse_page(page(first, [("0", 100, 10)]), default_model="x"))
    text = page(first, [("0", 30, 3), ("1", 50, 5)])
    assert "_created" not in text
    assert f.advance(parse_page(text, default_model="x")) == {"llama": Counts(80, 8, 2)}
    # A restart: vLLM makes a new directory, every count starts over.
    second = tmp_path / "run2"
    second.mkdir()
    restarted = parse_page(page(second, [("0", 7, 1)]), default_model="x")
    assert f.advance(restarted) == {"llama": Counts(7, 1, 1)}
    assert f.resets == 1


def triton_page(success: dict[str, int]) -> str:
    """Triton's request counter (core ``src/metrics.cc``) for the models given."""
    lines = [
        "# HELP nv_inference_request_success Number of successful inference requests, "
        "all batch sizes",
        "# TYPE nv_inference_request_success counter",
    ]
    lines += [
        f'nv_inference_request_success{{model="{m}",version="1"}} {n}' for m, n in success.items()
    ]
    return "\n".join(lines) + "\n"


def test_one_model_counting_from_zero_again_leaves_the_other_models_totals_alone() -> None:
    # Triton reloading one model (or a hostile page) sends that model's counter back;
    # the other model's lifetime total must not count again (it did: 1,000,000,010).
    increases, f = follow(
        [
            triton_page({"big": 1_000_000_000, "small": 100}),
            triton_page({"big": 1_000_000_010, "small": 30}),
        ]
    )
    assert increases[1] == {"big": Counts(requests=10), "small": Counts(requests=30)}
    assert f.resets == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A duplicated series (or family) would count its increase twice.
        (
            f'{TYPE}vllm:prompt_tokens_total{{model_name="m"}} 5\n'
            f'{TYPE}vllm:prompt_tokens_total{{model_name="m"}} 5\n',
            "listed twice",
        ),
        # 1e308 on two models overflowed the tick's sum (OverflowError in the stage).
        (f'{TYPE}vllm:prompt_tokens_total{{model_name="m"}} 1e308\n', "at most 2\\^53"),
        (f'{TYPE}vllm:prompt_tokens_total{{model_name="m"}} 9007199254740993\n', "2\\^53"),
    ],
)
def test_hostile_counts_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(PageError, match=message):
        parse_page(text, default_model="x")
    # The largest count a float holds by ones is accepted.
    ok = parse_page(
        f'{TYPE}vllm:prompt_tokens_total{{model_name="m"}} 9007199254740992\n', default_model="x"
    )
    assert ok.series[0].value == 2**53


def test_only_the_recognized_lines_reach_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page of 100,000 other series (cardinality explosion) cost ~8 s of CPU and ~100 MiB
    per read to parse whole; only the families read, their TYPE/HELP lines and no buckets
    are parsed now, and a flood of recognized names is refused before any parsing."""
    from jouled.collectors import server_metrics

    fed: list[str] = []
    real = server_metrics.text_string_to_metric_families

    def spy(text: str) -> Any:
        fed.append(text)
        return real(text)

    monkeypatch.setattr(server_metrics, "text_string_to_metric_families", spy)
    replay = TgiReplay(["mistral"])
    replay.serve("mistral", 12, 5)
    junk = "# TYPE junk_total counter\n" + "".join(
        f'junk_total{{i="{i}"}} {i}\n' for i in range(100_000)
    )
    page = parse_page(junk + replay.page(), default_model="mistral")
    assert {(s.kind, s.value) for s in page.series} == {
        ("input", 12),
        ("output", 5),
        ("requests", 1),
    }
    assert "junk" not in fed[0] and "_bucket" not in fed[0]
    assert len(fed[0].splitlines()) <= 12  # TYPE, HELP and one sample per family (+ counts)

    flood = TYPE + "".join(f'vllm:prompt_tokens_total{{model_name="m{i}"}} 1\n' for i in range(61))
    with pytest.raises(PageError, match="more than 20 recognized series"):
        parse_page(flood, default_model="x", max_series=20)
    assert len(fed) == 1  # refused by counting lines, unparsed


class Trickle(BaseHTTPRequestHandler):
    """A /metrics that sends a byte every 0.1 s: each read is within urllib's timeout."""

    def do_GET(self) -> None:
        with contextlib.suppress(OSError):
            self.send_response(200)
            self.end_headers()
            for _ in range(200):
                self.wfile.write(b"#")
                self.wfile.flush()
                time.sleep(0.1)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_jouled_check_gives_up_on_a_trickling_server_at_the_timeout() -> None:
    # urllib's timeout is per socket read: `jouled check` waited 20 s here (for ever on a
    # server that never stops).
    with http_server(Trickle) as base:
        sm = {"url": f"{base}/metrics", "timeout": 1}
        cfg = validate(
            {"workloads": [{"name": "w", "match": {"pid": 1}, "server_metrics": sm}]}, "t"
        )
        start = time.monotonic()
        (row,) = check_rows(cfg.workloads)
    assert time.monotonic() - start < 3.0
    assert not row.readable and row.detail == "no whole answer within 1s"


def test_model_names_from_the_page_are_cut_and_cleaned_like_spans() -> None:
    # A 1 MB model_name (or one with quotes and newlines) was exported as it came, in a
    # label of jouled_model_energy_joules_total and jouled_tokens_total.
    huge = "m" * 1_000_000
    text = (
        f'{TYPE}vllm:prompt_tokens_total{{model_name="{huge}"}} 3\n'
        'vllm:prompt_tokens_total{model_name="a\\"b\\nc"} 4\n'
        'vllm:prompt_tokens_total{model_name="\\n"} 5\n'
    )
    models = [s.model for s in parse_page(text, default_model="served").series]
    assert models == ["m" * 128, "abc", "served"]  # cleaned to nothing: the server's model


def vllm_created(value: int, created: str) -> str:
    """vLLM's prompt counter with its prometheus-client ``_created`` sample."""
    return (
        f'{TYPE}vllm:prompt_tokens_total{{model_name="m"}} {value}\n'
        "# TYPE vllm:prompt_tokens_created gauge\n"
        f'vllm:prompt_tokens_created{{model_name="m"}} {created}\n'
    )


def test_a_nan_creation_time_is_no_restart() -> None:
    # NaN != NaN: every read was a "restart" and counted the lifetime total again
    # (1,000,010 tokens for 10).
    increases, f = follow([vllm_created(v, "NaN") for v in (1_000_000, 1_000_010, 1_000_030)])
    assert [c["m"].input for c in increases] == [0, 10, 20]
    assert f.resets == 0


def test_a_creation_time_rewritten_each_read_is_trusted_once_at_most() -> None:
    # A server that writes "now" as the creation time: a real restart cannot happen on two
    # reads in a row, so after the second move only counters going down tell a restart.
    pages = [vllm_created(1_000_000 + 10 * i, f"{1.7e9 + i}") for i in range(5)]
    increases, f = follow(pages)
    assert [c["m"].input for c in increases] == [0, 1_000_010, 10, 10, 10]
    assert f.resets == 1 and not f.created_trusted
    # A real restart (counters down) is still seen.
    f.advance(parse_page(vllm_created(7, "1.8e9"), default_model="x"))
    assert f.resets == 2


async def test_a_page_sent_in_several_writes_is_read_whole() -> None:
    # StreamReader.read(n) returns what has arrived: the page was cut after the first
    # write, and a counter of 1,234,567 read as 1 (a "restart" to the follower, which then
    # counted the model's lifetime total again).
    async def metrics(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(f'{TYPE}vllm:prompt_tokens_total{{model_name="m"}} 1'.encode())
        await asyncio.sleep(0.05)
        await resp.write(b"234567\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async with TestServer(app, host="127.0.0.1") as srv, aiohttp.ClientSession() as session:
        text = await fetch_page(session, str(srv.make_url("/metrics")), max_bytes=4096)
    assert parse_page(text, default_model="x").series[0].value == 1_234_567


async def test_redirects_are_followed_on_the_same_host_only() -> None:
    # A server mounting its page at /metrics/ redirects there: followed. One that sends
    # jouled to another host (here 127.0.0.2) would have it read that host every tick.
    page = f'{TYPE}vllm:prompt_tokens_total{{model_name="m"}} 5\n'

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/metrics":
            raise web.HTTPTemporaryRedirect("/metrics/")
        if request.path == "/away":
            raise web.HTTPFound(f"http://127.0.0.2:{request.url.port}/metrics/")
        if request.path == "/loop":
            raise web.HTTPFound("/loop")
        return web.Response(text=page)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    async with TestServer(app, host="127.0.0.1") as srv, aiohttp.ClientSession() as session:
        text = await fetch_page(session, str(srv.make_url("/metrics")), max_bytes=4096)
        assert parse_page(text, default_model="x").series[0].value == 5
        with pytest.raises(PageError, match=r"redirects to another host \(http://127\.0\.0\.2"):
            await fetch_page(session, str(srv.make_url("/away")), max_bytes=4096)
        with pytest.raises(PageError, match="more than 3 redirects"):
            await fetch_page(session, str(srv.make_url("/loop")), max_bytes=4096)
