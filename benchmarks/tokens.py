"""Joules per token on the emulated RAPL with the example server, in server-metrics mode
and with spans in the same run, against the emulator's known truth.

The example server (``examples/inference_server``, tiny BERT in numpy) runs with
``--metrics`` (vLLM's token counters on ``GET /metrics``) and sends a span per request;
jouled reads both: the workload is in server-metrics mode (``server_metrics``), so
``jouled_model_energy_joules_total`` comes from the server's counters, while the spans
still give ``jouled_request_energy_joules``. The emulated RAPL
(``jouled.testing.load_following``) costs every CPU-second of any process exactly
``joules_per_cpu_second``, so the truth for a phase is the server's CPU seconds times that.

Three phases of sequential requests, one text per request, of short, medium and long texts
(8, 40 and 120 words: the model truncates at 128 tokens).

    .venv/bin/python -m benchmarks.tokens [--seconds 12] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks._util import cpu_seconds, daemon, exit_on_sigterm, save, wait_for
from jouled.loadgen.readout import parse_metrics
from jouled.testing.load_following import LoadFollowingRapl
from jouled.testing.net import free_port, http_get

REPO = Path(__file__).resolve().parents[1]
WORDS = [
    "markets",
    "rally",
    "after",
    "the",
    "central",
    "bank",
    "holds",
    "rates",
    "steady",
    "while",
    "inflation",
    "cools",
]
PHASES = {"short": 8, "medium": 40, "long": 120}
MODEL = "tiny-bert"


def text_of(words: int, i: int) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] + str(k % 7) for k in range(words))


def total(m: dict[Any, float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in m.items() if n == name and want <= set(lab))


def post(url: str, text: str) -> None:
    body = json.dumps({"instances": [{"text": text}]}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def bench(seconds: float, interval: float) -> dict[str, Any]:
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        emu = LoadFollowingRapl(tmp / "sys")
        emu.start()
        port = free_port()
        ingest_port = free_port()
        pidfile = tmp / "server.pid"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "examples.inference_server.server",
                "--port",
                str(port),
                "--metrics",
                "--jouled-ingest",
                f"http://127.0.0.1:{ingest_port}",
                "--workload",
                "classifier",
                "--pidfile",
                str(pidfile),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 60, "server")
            cfg = {
                "interval": interval,
                "ingest": {"listen": f"127.0.0.1:{ingest_port}", "grpc_listen": None},
                "collectors": {
                    "rapl": {"enabled": True, "path": str(emu.class_dir)},
                    "nvml": {"enabled": False},
                    "estimate": {"enabled": False},
                },
                "workloads": [
                    {
                        "name": "classifier",
                        "match": {"pidfile": str(pidfile)},
                        "server_metrics": f"http://127.0.0.1:{port}/metrics",
                    }
                ],
                "attribution": {
                    "idle": "exclude",
                    "idle_power_watts": {"cpu": emu.package_idle_w, "dram": emu.dram_idle_w},
                },
                "spans": {"settle_seconds": 2.0},
                "ledger": {"path": ""},
            }
            with daemon(tmp, cfg) as d:
                wait_for(
                    lambda: (
                        'jouled_server_metrics_up{workload="classifier"} 1.0'
                        in d.metrics().decode()
                    ),
                    20,
                    "the server's /metrics read",
                )
                time.sleep(2 * interval)
                url = f"http://127.0.0.1:{port}/predict"
                for phase, words in PHASES.items():
                    before = parse_metrics(d.metrics().decode())
                    cpu0 = cpu_seconds(server.pid)
                    t0 = time.monotonic()
                    i = 0
                    while time.monotonic() - t0 < seconds:
                        post(url, text_of(words, i))
                        i += 1
                    cpu1 = cpu_seconds(server.pid)
                    time.sleep(2.0 + 4 * interval)  # spans settle, the last counters are read
                    after = parse_metrics(d.metrics().decode())

                    def delta(name: str, m0: Any = before, m1: Any = after, **lab: str) -> float:
                        return total(m1, name, **lab) - total(m0, name, **lab)

                    model = {"workload": "classifier", "model": MODEL}
                    energy = delta("jouled_model_energy_joules_total", **model)
                    tokens = delta("jouled_tokens_total", kind="input", **model)
                    requests = delta("jouled_requests_total", **model)
                    truth = (cpu1 - cpu0) * emu.joules_per_cpu_second
                    rows[phase] = {
                        "words": words,
                        "requests": requests,
                        "input_tokens": tokens,
                        "server_j": energy,
                        "server_j_per_input_token": energy / tokens,
                        "server_j_per_request": energy / requests,
                        "spans_j_per_request": delta("jouled_request_energy_joules_sum", **model)
                        / delta("jouled_request_energy_joules_count", **model),
                        "true_j": truth,
                        "true_j_per_request": truth / requests,
                        "workload_j": delta("jouled_workload_energy_joules_total"),
                    }
        finally:
            server.terminate()
            server.wait(10)
            emu.stop()
    return {
        "seconds_per_phase": seconds,
        "interval_s": interval,
        "joules_per_cpu_second": emu.joules_per_cpu_second,
        "phases": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--interval", type=float, default=0.5)
    args = p.parse_args()
    results = bench(args.seconds, args.interval)
    print(
        "phase   words  requests  input tokens  J/input token  J/request: server  spans  "
        "truth (CPU s x J/CPU s)"
    )
    for name, r in results["phases"].items():
        print(
            f"{name:7} {r['words']:5} {r['requests']:9.0f} {r['input_tokens']:13.0f} "
            f"{r['server_j_per_input_token']:14.5f} {r['server_j_per_request']:18.4f} "
            f"{r['spans_j_per_request']:6.4f}  {r['true_j_per_request']:.4f}"
        )
    print("saved", save("tokens", results))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
