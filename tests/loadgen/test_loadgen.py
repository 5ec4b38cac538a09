"""jouled loadgen: the thesis's scenarios as planned, the caps, the summary, jouled's counters,
and the command against a real aiohttp server on loopback."""

import asyncio
import io
import itertools
import json
import math
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.loadgen import cli as loadgen_cli
from jouled.loadgen.driver import (
    LoadResult,
    Progress,
    percentile,
    run_closed_loop,
    run_open_loop,
    run_scenario,
    summarize,
)
from jouled.loadgen.readout import energy_report, parse_metrics
from jouled.loadgen.scenarios import DEFAULT_TEXTS, LoadgenError, plan_scenario, poisson_arrivals


def test_scenarios_match_the_thesis_appendix() -> None:
    s1, s2, s3 = (plan_scenario(n, 42) for n in (1, 2, 3))
    assert [len(r.texts) for r in s1] == [1] * 500
    assert all(0.001 <= r.pause_after_s <= 1.0 for r in s1)
    assert len({r.pause_after_s for r in s1}) > 100  # random, not constant
    assert [len(r.texts) for r in s2] == [10] * 10
    assert all(r.pause_after_s == 2.0 for r in s2)
    assert [len(r.texts) for r in s3] == [500]
    # 1,100 texts in 511 requests, as the thesis counts.
    assert sum(len(r.texts) for p in (s1, s2, s3) for r in p) == 1100
    assert all(t in DEFAULT_TEXTS for p in (s1, s2, s3) for r in p for t in r.texts)


def test_scenarios_are_drawn_from_the_seed() -> None:
    assert plan_scenario(1, 42) == plan_scenario(1, 42)
    assert plan_scenario(1, 42) != plan_scenario(1, 7)
    scaled = plan_scenario(1, 42, pause_scale=0.5)
    assert [r.pause_after_s for r in scaled] == [r.pause_after_s * 0.5 for r in plan_scenario(1)]


def test_bad_scenario_arguments() -> None:
    with pytest.raises(LoadgenError):
        plan_scenario(4)
    with pytest.raises(LoadgenError):
        plan_scenario(1, texts=[])
    with pytest.raises(LoadgenError):
        list(poisson_arrivals(0, 1, 10))


@settings(max_examples=200)
@given(
    st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50),
    st.floats(0, 100),
)
def test_percentile_is_numpys_linear(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-6)


def test_poisson_arrivals_have_the_asked_rate() -> None:
    times = list(poisson_arrivals(50.0, 3, 200.0))
    assert all(b > a for a, b in itertools.pairwise(times))
    assert times[-1] <= 200.0
    assert len(times) / 200.0 == pytest.approx(50.0, rel=0.05)


class FakeSender:
    def __init__(self, fail_every: int = 0) -> None:
        self.calls: list[Sequence[str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_every = fail_every

    async def __call__(self, texts: Sequence[str]) -> None:
        self.calls.append(texts)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1
        if self.fail_every and len(self.calls) % self.fail_every == 0:
            raise RuntimeError("boom")


async def test_scenario_respects_max_requests_and_counts_errors() -> None:
    send = FakeSender(fail_every=3)
    plan = plan_scenario(1, pause_scale=0.0)
    result = await run_scenario(plan, send, max_requests=9, duration_s=60)
    assert len(send.calls) == 9 and result.stopped_by == "max-requests"
    summary = summarize(result)
    assert summary.requests == 9 and summary.errors == 3
    assert result.errors == 3  # the running count the progress line shows
    assert summary.first_error == "RuntimeError: boom"
    assert summary.texts == 6


async def test_scenario_duration_is_a_hard_cap() -> None:
    send = FakeSender()
    plan = plan_scenario(2)  # 2 s pauses
    result = await run_scenario(plan, send, max_requests=100, duration_s=0.3)
    assert len(send.calls) == 1 and result.stopped_by == "duration"
    assert result.wall_s < 2.0  # the pause was cut at the deadline, not slept in full


async def test_closed_loop_keeps_n_in_flight_and_stops_at_the_cap() -> None:
    send = FakeSender()
    result = await run_closed_loop(
        4, send, seed=1, texts=DEFAULT_TEXTS, texts_per_request=3, max_requests=40, duration_s=60
    )
    assert len(result.records) == 40 and send.max_in_flight == 4
    assert all(len(t) == 3 for t in send.calls)


async def test_open_loop_is_bounded_by_count() -> None:
    send = FakeSender()
    result = await run_open_loop(
        2000.0,
        send,
        seed=1,
        texts=DEFAULT_TEXTS,
        texts_per_request=1,
        max_requests=25,
        duration_s=30,
    )
    assert len(send.calls) == 25 and result.stopped_by == "max-requests"


METRICS_BEFORE = """
jouled_requests_total{workload="inference",model="m"} 10
jouled_request_energy_joules_sum{workload="inference",model="m"} 5
jouled_model_energy_joules_total{workload="inference",model="m"} 5
jouled_request_gflops_total{workload="inference",model="m"} 100
jouled_workload_energy_joules_total{workload="inference",component="cpu",source="rapl"} 20
jouled_requests_total{workload="other",model="m"} 1
"""
METRICS_AFTER = """
jouled_requests_total{workload="inference",model="m"} 30
jouled_requests_total{workload="inference",model="n"} 10
jouled_request_energy_joules_sum{workload="inference",model="m"} 25
jouled_request_energy_joules_sum{workload="inference",model="n"} 20
jouled_model_energy_joules_total{workload="inference",model="m"} 25
jouled_model_energy_joules_total{workload="inference",model="n"} 20
jouled_request_gflops_total{workload="inference",model="m"} 300
jouled_request_gflops_total{workload="inference",model="n"} 200
jouled_workload_energy_joules_total{workload="inference",component="cpu",source="rapl"} 70
jouled_workload_energy_joules_total{workload="inference",component="dram",source="rapl"} 5
jouled_requests_total{workload="other",model="m"} 101
jouled_spans_late_total 2
"""


def test_energy_report_is_the_difference_of_jouled_counters() -> None:
    before, after = parse_metrics(METRICS_BEFORE), parse_metrics(METRICS_AFTER)
    r = energy_report(before, after, workload="inference", texts=80)
    assert r.requests_settled == 30
    assert r.request_energy_j == 40
    assert r.joules_per_request == pytest.approx(40 / 30)
    assert r.joules_per_text == pytest.approx(0.5)
    assert r.gflops_per_request == pytest.approx(400 / 30)
    assert r.workload_energy_j == 55
    assert r.sources == ("rapl",) and not r.estimated
    assert r.spans_late == 2
    everything = energy_report(before, after, workload=None, texts=0)
    assert everything.requests_settled == 130


def test_server_metrics_mode_joules_per_request_come_from_the_model_energy() -> None:
    """A workload in server-metrics mode settles no spans: its requests and energy are the
    server's counts and the energy split by them (docs/TOKENS.md). Reading the spans'
    histogram gave 0.000 J/request for the example server with --metrics."""
    before = parse_metrics(
        'jouled_requests_total{workload="chat",model="m"} 100\n'
        'jouled_model_energy_joules_total{workload="chat",model="m"} 50\n'
    )
    after = parse_metrics(
        'jouled_requests_total{workload="chat",model="m"} 110\n'
        'jouled_model_energy_joules_total{workload="chat",model="m"} 62\n'
    )
    r = energy_report(before, after, workload="chat", texts=100)
    assert (r.requests_settled, r.request_energy_j) == (10, 12)
    assert r.joules_per_request == pytest.approx(1.2)
    assert math.isnan(r.gflops_per_request)  # a server reports no work per request: n/a


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:1/p", "http://localhost:8080", "http://[::1]:80"]
)
def test_loopback_targets_are_allowed(url: str) -> None:
    loadgen_cli.check_loopback(url, allow_remote=False)


def test_remote_targets_need_a_flag() -> None:
    with pytest.raises(LoadgenError, match="allow-remote"):
        loadgen_cli.check_loopback("http://10.1.2.3:8080/predict", allow_remote=False)
    loadgen_cli.check_loopback("http://10.1.2.3:8080/predict", allow_remote=True)
    assert loadgen_cli.main(["--scenario", "1", "--url", "http://192.0.2.1/predict"]) == 2


@pytest.fixture
def server() -> Iterator[tuple[str, list[list[str]]]]:
    """A real aiohttp server in a thread: the command runs its own event loop."""
    seen: list[list[str]] = []

    async def predict(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append([i["text"] for i in body["instances"]])
        return web.json_response({"predictions": []})

    scrapes: list[int] = []

    async def metrics(_request: web.Request) -> web.Response:
        # A jouled stand-in: counters before the run on the first scrape, after it later.
        scrapes.append(1)
        return web.Response(text=METRICS_BEFORE if len(scrapes) == 1 else METRICS_AFTER)

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/predict", predict)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/predict", seen
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_command_sends_scenario_2_and_writes_a_summary(
    server: tuple[str, list[list[str]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, seen = server
    out = tmp_path / "summary.json"
    code = loadgen_cli.main(
        ["--scenario", "2", "--url", url, "--pause-scale", "0", "--no-progress", "--json", str(out)]
    )
    assert code == 0
    assert [len(texts) for texts in seen] == [10] * 10
    assert seen == [list(r.texts) for r in plan_scenario(2, 42)]
    summary = json.loads(out.read_text())["summary"]
    assert summary["requests"] == 10 and summary["errors"] == 0 and summary["texts"] == 100
    assert "p99" in capsys.readouterr().out


def test_command_counts_http_errors(server: tuple[str, list[list[str]]]) -> None:
    url, _seen = server
    bad = url.replace("/predict", "/missing")
    assert (
        loadgen_cli.main(
            ["--concurrency", "2", "--max-requests", "6", "--url", bad, "--no-progress"]
        )
        == 1
    )


def test_summary_names_the_workloads_and_waits_out_loud(
    server: tuple[str, list[list[str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _seen = server
    jouled = url.replace("/predict", "")
    argv = ["--scenario", "2", "--url", url, "--pause-scale", "0", "--jouled", jouled]
    assert loadgen_cli.main([*argv, "--settle-timeout", "5"]) == 0
    out, err = capsys.readouterr()
    assert "jouled, all workloads (source: rapl):" in out.splitlines()
    # Not a terminal: plain progress lines, and the settle wait says what it waits for.
    err_lines = err.splitlines()
    assert err_lines[0].startswith("loadgen: 10/10 requests, 0 errors, ")
    assert err_lines[1] == (
        "loadgen: waiting (up to 5 s) for jouled to settle the run's 10 request(s): a span "
        "counts once its energy's ticks close (spans.settle_seconds) ..."
    )
    assert err_lines[2].startswith("loadgen: jouled settled 130 of 10 request(s) in ")


def test_one_workload_is_named_in_the_summary() -> None:
    before, after = parse_metrics(METRICS_BEFORE), parse_metrics(METRICS_AFTER)
    out = io.StringIO()
    summary = summarize(LoadResult(mode="scenario 2", records=[], wall_s=1.0))
    loadgen_cli.render_summary(
        summary, energy_report(before, after, workload="inference", texts=80), out
    )
    assert "jouled, workload inference (source: rapl):" in out.getvalue().splitlines()


def test_progress_off_a_terminal_is_a_plain_line_every_few_seconds() -> None:
    stream = io.StringIO()  # not a tty, like CI or a log file
    progress = Progress(10, stream, every_s=0.0)
    progress.update(3, 1)
    progress.update(10, 1)
    progress.update(10, 1, force=True)  # the final count, already shown: not again
    progress.close()
    lines = stream.getvalue().splitlines()
    assert [line.rsplit(", ", 1)[0] for line in lines] == [
        "loadgen: 3/10 requests, 1 errors",
        "loadgen: 10/10 requests, 1 errors",
    ]
    assert "\r" not in stream.getvalue()
    slow = io.StringIO()
    throttled = Progress(None, slow)  # every 5 s by default: nothing within the first 5 s
    throttled.update(1, 0)
    assert slow.getvalue() == ""
    Progress(10, slow, enabled=False).update(1, 0, force=True)
    assert slow.getvalue() == ""
