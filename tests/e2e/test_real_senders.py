"""Real senders to a real ``jouled run`` on a fake RAPL tree: the OpenTelemetry Python SDK over
OTLP/gRPC (gzip) and OTLP/HTTP, the OpenTelemetry JS SDK over OTLP/HTTP, and replays of vLLM,
Triton and TGI built as their sources build them (tests/e2e/replay_servers.py cites them).
Every sender is a workload process matched by its command line; its requests appear in
/metrics under the right workload and model, with the right work, each counted once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tests.e2e.test_attribution import samples, value
from tests.support.procs import Proc, fake_powercap, jouled, wait_for

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
REPLAY = HERE / "replay_servers.py"
JS = HERE.parent / "js"
N = 4
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def js_ready() -> None:
    """The JS SDK from tests/js/package-lock.json (the Makefile's `npm ci` step)."""
    if shutil.which("node") is None:
        pytest.fail("node is needed for the OpenTelemetry JS SDK sender (apt-get install nodejs)")
    if not (JS / "node_modules" / "@opentelemetry" / "sdk-trace-base").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=300)


WORKLOADS = [
    # name, cmdline regex, model (workloads[].model)
    ("classifier", r"replay_servers\.py sdk-|send_spans\.js", None),
    ("vllm", r"replay_servers\.py vllm", "facebook/opt-125m"),
    ("triton-inference-server", r"replay_servers\.py triton-", None),
    ("text-generation-inference.router", r"replay_servers\.py tgi", "bigscience/bloom-560m"),
]


def test_real_senders_and_server_replays_are_counted_once_with_model_and_work(
    tmp_path: Path,
) -> None:
    js_ready()
    go = tmp_path / "go"
    cfg = {
        "interval": 0.5,
        # The fake meter's power is flat: all of it is shared by CPU use, none learned as idle;
        # a tick's energy is spread over the tick (senders that just woke up are not in the
        # sub-tick CPU profile yet), so every request gets some.
        "attribution": {"idle": "share", "cpu_samples_per_tick": 1},
        "workloads": [
            {"name": name, "match": {"cmdline": rx}, **({"model": model} if model else {})}
            for name, rx, model in WORKLOADS
        ],
        "spans": {
            "settle_seconds": 2.0,
            "gflops_per_token": {
                "py-grpc": 0.5,
                "py-http": 0.5,
                "js-http": 0.5,
                "facebook/opt-125m": 0.25,
            },
        },
    }
    with (
        fake_powercap(tmp_path, "--package-watts", "40", "--dram-watts", "4") as powercap,
        jouled(
            tmp_path,
            {**cfg, "collectors": {"rapl": {"path": str(powercap)}, "nvml": {"enabled": False}}},
        ) as daemon,
    ):
        grpc_url = f"http://{daemon.grpc}"
        traces = daemon.ingest_url + "/v1/traces"
        py = [sys.executable, str(REPLAY)]
        senders = [
            Proc([*py, "sdk-grpc", grpc_url, str(go), str(N), "py-grpc"], tmp_path / "g.log"),
            Proc([*py, "sdk-http", traces, str(go), str(N), "py-http"], tmp_path / "h.log"),
            # vLLM as its docs start it: grpc:// endpoint, insecure, no OTEL_SERVICE_NAME.
            Proc(
                [*py, "vllm", f"grpc://{daemon.grpc}", str(go), str(N)],
                tmp_path / "v.log",
                env={"OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true", "OTEL_SERVICE_NAME": ""},
            ),
            Proc(
                [*py, "triton-children-first", traces, str(go), str(N), "simple"],
                tmp_path / "t1.log",
            ),
            Proc(
                [*py, "triton-parents-first", traces, str(go), str(N), "densenet_onnx"],
                tmp_path / "t2.log",
            ),
            Proc([*py, "tgi", grpc_url, str(go), str(N)], tmp_path / "tgi.log"),
            # The JS SDK: a node process matched by the classifier's cmdline.
            Proc(
                [
                    "node",
                    str(JS / "send_spans.js"),
                    traces,
                    "classifier",
                    "js-http",
                    str(N),
                    "100",
                    "20",
                    str(go),
                ],
                tmp_path / "js.log",
            ),
        ]
        try:
            claimed = {"classifier": 3, "triton-inference-server": 2}
            wait_for(
                lambda: all(
                    value(samples(daemon.metrics()), "jouled_workload_processes", workload=w)
                    >= claimed.get(w, 1)
                    for w, _, _ in WORKLOADS
                ),
                30,
                "every sender claimed by its workload",
            )
            go.touch()
            for s in senders:
                assert s.wait(60) == 0, s.output()
            expected = {
                ("classifier", "py-grpc"): N,
                ("classifier", "py-http"): N,
                ("classifier", "js-http"): N,
                ("vllm", "facebook/opt-125m"): N,
                ("triton-inference-server", "simple"): N,
                ("triton-inference-server", "densenet_onnx"): N,
                ("text-generation-inference.router", "bigscience/bloom-560m"): N,
            }

            def settled() -> bool:
                m = samples(daemon.metrics())
                return value(m, "jouled_spans_pending") == 0 and all(
                    value(m, "jouled_requests_total", workload=w, model=mo) == n
                    for (w, mo), n in expected.items()
                )

            wait_for(settled, 40, "every request settled")
            m = samples(daemon.metrics())
            # A gRPC exporter pointed at the HTTP port: refused, one line saying where to go.
            with grpc.insecure_channel(daemon.ingest_url.removeprefix("http://")) as channel:
                export = channel.unary_unary(EXPORT)
                for _ in range(3):
                    with pytest.raises(grpc.RpcError) as err:
                        export(b"", timeout=5)
                    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
            hint = f"OTLP/gRPC is served on {daemon.grpc}"
            wait_for(lambda: hint in daemon.proc.output(), 10, "the HTTP/2 hint")
            log = daemon.proc.output()
        finally:
            for s in senders:
                s.stop()
    # Each request counted once: no other (workload, model) pair, no "unknown" model.
    counted = {
        (dict(lab)["workload"], dict(lab)["model"]): v
        for (name, lab), v in m.items()
        if name == "jouled_requests_total"
    }
    assert {k: v for k, v in counted.items() if v} == expected
    assert value(m, "jouled_spans_rejected_total", reason="unknown_workload") == 0
    # Work from the tokens: (100 + 20) x 0.5 for the SDKs, (24 + 8) x 0.25 for vLLM.
    for model in ("py-grpc", "py-http", "js-http"):
        gflops = value(m, "jouled_request_gflops_total", workload="classifier", model=model)
        assert gflops == pytest.approx(N * 60.0)
    vllm = {"workload": "vllm", "model": "facebook/opt-125m"}
    assert value(m, "jouled_request_gflops_total", **vllm) == pytest.approx(N * 8.0)
    # TGI sends no tokens: its requests are split by time, with energy and no work.
    tgi = {"workload": "text-generation-inference.router", "model": "bigscience/bloom-560m"}
    assert value(m, "jouled_request_gflops_total", **tgi) == 0
    for workload, model in expected:
        labels = {"workload": workload, "model": model}
        assert value(m, "jouled_request_energy_joules_sum", **labels) > 0, labels
    # Books balance; the nested Triton and TGI shard/batch spans are not requests.
    assert value(m, "jouled_spans_late_total") == 0
    assert "OTLP/gRPC ingest listening on" in log
    assert "Traceback" not in log, log[-3000:]
    assert log.count("a gRPC (HTTP/2) client connected to an HTTP/1 port") == 1
