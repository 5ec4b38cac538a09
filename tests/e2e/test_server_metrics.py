"""Server-metrics mode end to end: a real ``jouled run`` on the emulated RAPL, four busy
workload processes, each next to a replay of one inference server's /metrics page (vLLM,
SGLang, TGI, Triton; tests/support/server_pages.py cites each source) on loopback HTTP.
The servers' counters advance, restart once, and the package power triples halfway.

Checked from jouled's own /metrics: its token and request counters equal the servers',
model energy adds up to the workload's (with what is still waiting or unserved), the split
between two models follows their tokens, and joules per output token follows the power.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jouled.testing.fake_powercap import FakePowercap
from tests.support.procs import free_port, jouled, start_busy, wait_for
from tests.support.server_pages import (
    Replay,
    SglangReplay,
    TgiReplay,
    TritonReplay,
    VllmReplay,
    serving,
)

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: Samples, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def total(m: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in m.items() if n == name and want <= set(lab))


# workload -> (replay, the requests of one step: (model, prompt tokens, generated tokens))
STEPS: dict[str, list[tuple[str, int, int]]] = {
    "vllm": [("llama-3-8b", 200, 50), ("phi-3-mini", 60, 40)],  # 250 : 100 tokens
    "sglang": [("qwen2-7b", 120, 30)],
    "tgi": [("mistral", 300, 20)],
    "triton": [("tensorrt_llm", 80, 64)],
}
MODEL_NAME = {"tgi": "mistral-7b"}  # TGI labels no model: server_metrics.model names it


def make_replays() -> dict[str, Replay]:
    return {
        "vllm": VllmReplay(["llama-3-8b", "phi-3-mini"]),
        "sglang": SglangReplay(["qwen2-7b"]),
        "tgi": TgiReplay(["mistral"]),
        "triton": TritonReplay(["tensorrt_llm"]),
    }


def test_server_counters_drive_energy_per_model_and_per_token(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path / "sys")
    package = fake.add_zone("0", "package-0", 40.0)
    stop_rapl = threading.Event()
    rapl = threading.Thread(target=fake.run_realtime, args=(stop_rapl,), kwargs={"tick_s": 0.02})
    replays = make_replays()
    with contextlib.ExitStack() as stack:
        rapl.start()
        stack.callback(rapl.join, 5)
        stack.callback(stop_rapl.set)
        urls = {w: stack.enter_context(serving(r)) for w, r in replays.items()}
        for w in replays:
            proc = start_busy(
                tmp_path / f"{w}.pid", tmp_path / f"{w}.log", busy_s=0.03, idle_s=0.07
            )
            stack.callback(proc.stop)
        dead = f"http://127.0.0.1:{free_port()}/metrics"
        workloads = [
            {
                "name": w,
                "match": {"pidfile": str(tmp_path / f"{w}.pid")},
                "server_metrics": {"url": urls[w], "timeout": 0.4}
                | ({"model": MODEL_NAME[w]} if w in MODEL_NAME else {}),
            }
            for w in replays
        ]
        workloads.append({"name": "down", "match": {"pid": 999_999}, "server_metrics": dead})
        cfg = {
            "interval": 0.5,
            "collectors": {
                "rapl": {"path": str(fake.class_dir)},
                "nvml": {"enabled": False},
                "estimate": {"enabled": False},
            },
            "attribution": {"idle": "share"},
            "workloads": workloads,
        }
        daemon = stack.enter_context(jouled(tmp_path, cfg))

        def up() -> bool:
            m = samples(daemon.metrics())
            return all(value(m, "jouled_server_metrics_up", workload=w) == 1 for w in replays)

        wait_for(up, 20, "every replayed server read")
        time.sleep(1.2)  # a baseline read of the idle servers, before any request

        stop_serving = threading.Event()

        def serve(seconds: float | None = None) -> None:
            """Every 0.1 s each server serves its step, for ``seconds`` or until stopped."""
            t0 = time.monotonic()
            while not stop_serving.is_set() and (
                seconds is None or time.monotonic() - t0 < seconds
            ):
                for w, r in replays.items():
                    r.serve_all(STEPS[w])
                time.sleep(0.1)

        serve(2.0)
        # A restart takes a while: what the old process counted after jouled's last read
        # of it dies with it (as it would for Prometheus), so that read comes first.
        time.sleep(1.2)
        for r in replays.values():
            r.restart()
        server = threading.Thread(target=serve)
        server.start()
        stack.callback(server.join, 5)
        stack.callback(stop_serving.set)
        time.sleep(1.5)
        # Two 5 s windows of steady serving: 40 W, then 120 W.
        a0 = samples(daemon.metrics())
        time.sleep(5.0)
        a1 = samples(daemon.metrics())
        package.set_power(120.0)
        time.sleep(1.0)  # the tick straddling the change goes to neither window
        b0 = samples(daemon.metrics())
        time.sleep(5.0)
        b1 = samples(daemon.metrics())
        stop_serving.set()
        server.join(5)
        time.sleep(1.5)  # the last work read and split
        b = samples(daemon.metrics())
        check = subprocess.run(
            [sys.executable, "-m", "jouled", "check", "--config", str(daemon.config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # 1. jouled's token and request counters are the servers' own (restart included).
    for w, r in replays.items():
        assert value(b, "jouled_server_metrics_resets_total", workload=w) == 1, w
        for model, _p, _n in STEPS[w]:
            name = MODEL_NAME.get(w, model)
            life = r.lifetime(model)
            assert value(b, "jouled_tokens_total", workload=w, model=name, kind="input") == (
                life.input
            ), w
            assert value(b, "jouled_tokens_total", workload=w, model=name, kind="output") == (
                life.output
            ), w
            assert value(b, "jouled_requests_total", workload=w, model=name) == life.requests, w
    # Triton counts requests for every model of the ensemble; tokens only for the LLM.
    assert value(b, "jouled_requests_total", workload="triton", model="ensemble") == (
        replays["triton"].lifetime("tensorrt_llm").requests
    )
    assert value(b, "jouled_model_energy_joules_total", workload="triton", model="ensemble") == 0

    # 2. Books per workload: Σ models + unserved + pending = the workload's energy.
    for w in replays:
        workload = total(b, "jouled_workload_energy_joules_total", workload=w)
        models = total(b, "jouled_model_energy_joules_total", workload=w)
        rest = value(b, "jouled_server_unserved_energy_joules_total", workload=w) + value(
            b, "jouled_server_pending_energy_joules", workload=w
        )
        assert workload > 0, w
        assert models + rest == pytest.approx(workload, rel=1e-9), w
        assert models > 0.8 * workload, w  # nearly all of it served a model

    # 3. Two models of one server share by tokens: 250 : 100 per step.
    llama = value(b, "jouled_model_energy_joules_total", workload="vllm", model="llama-3-8b")
    phi = value(b, "jouled_model_energy_joules_total", workload="vllm", model="phi-3-mini")
    assert llama / phi == pytest.approx(2.5, rel=1e-9)

    # 4. Joules per output token follows the power: x3 the package power, x3 per token once
    # the workload's share of the host (other processes run on this machine) is divided
    # out. Per window: the workload's energy (given to its model, or still waiting for the
    # next read) over the output tokens the server counted.
    def per_token(m0: Samples, m1: Samples, w: str) -> tuple[float, float]:
        name = MODEL_NAME.get(w, STEPS[w][0][0])

        def d(name_: str, **labels: str) -> float:
            return total(m1, name_, **labels) - total(m0, name_, **labels)

        joules = d("jouled_model_energy_joules_total", workload=w) + d(
            "jouled_server_pending_energy_joules", workload=w
        )
        tokens = d("jouled_tokens_total", workload=w, model=name, kind="output")
        share = d("jouled_workload_energy_joules_total", workload=w) / d(
            "jouled_host_energy_joules_total"
        )
        return joules / tokens, share

    for w in ("sglang", "tgi", "triton"):  # one model each
        jpt_a, share_a = per_token(a0, a1, w)
        jpt_b, share_b = per_token(b0, b1, w)
        assert jpt_b / jpt_a / (share_b / share_a) == pytest.approx(3.0, rel=0.1), w

    # 5. A server that cannot be read is marked down, here and in `jouled check`.
    assert value(b, "jouled_server_metrics_up", workload="down") == 0
    rows = [line for line in check.stdout.splitlines() if line.startswith("server_metrics")]
    assert len(rows) == 5, check.stdout + check.stderr
    assert sum(" ok " in row for row in rows) == 4, rows
    assert any(row.startswith(f"server_metrics  down {dead}") and "FAIL" in row for row in rows)
