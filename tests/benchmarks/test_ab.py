"""``benchmarks.ab``: two builds of jouled side by side (what it runs, and how it reads)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks._util import (
    ROOT,
    DaemonProc,
    daemon,
    http_get,
    otlp_batch,
    wait_for,
    workload_configs,
)
from benchmarks.ab import _imports_from, summary, tree, unbuilt


def _row(a: float, b: float) -> dict[str, object]:
    return {
        "window_s": 20.0,
        "a": {"cpu_ms_per_s": a, "rss_mb": 70.0},
        "b": {"cpu_ms_per_s": b, "rss_mb": 71.0},
    }


def test_an_order_is_read_as_bs_mean_against_as_and_the_windows_b_won() -> None:
    s = summary({"order": ["b", "a"], "windows": [_row(10, 9), _row(12, 12.5), _row(11, 10)]})
    assert s["order"] == "b then a"
    assert s["a"]["cpu_ms_per_s_mean"] == 11.0
    assert s["b"]["cpu_ms_per_s_mean"] == pytest.approx(10.5)
    assert s["b_vs_a_percent"] == pytest.approx(-4.55, abs=0.01)
    assert s["b_lower_in"] == 2  # a tie or a higher window is not a win
    assert s["windows"] == 3
    assert s["b"]["rss_mb_max"] == 71.0


def test_a_revision_is_exported_and_built_and_the_daemon_runs_from_it(tmp_path: Path) -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    with tree("HEAD", sys.executable) as (root, what):
        assert root != ROOT
        assert what.startswith("HEAD (") and head.startswith(what[6:-1])
        assert unbuilt(root) == []
        assert sorted(p.stem for p in root.joinpath("jouled").rglob("_*.c")) == sorted(
            p.name.split(".")[0] for p in root.joinpath("jouled").rglob("_*.so")
        )
        # Not this checkout's jouled, which an editable install would offer first.
        assert _imports_from(sys.executable, root) == root
        with daemon(tmp_path, {}, root=root) as d:
            assert http_get(d.metrics_url + "/healthz")[0] == 200
            pid_cwd = Path(f"/proc/{d.pid}/cwd").resolve()
            assert pid_cwd == root
    assert not root.exists()  # the export is removed on exit


def test_a_checkout_missing_an_extension_is_named(tmp_path: Path) -> None:
    (tmp_path / "jouled" / "ingest").mkdir(parents=True)
    (tmp_path / "jouled" / "ingest" / "_otlpscan.c").write_text("")
    (tmp_path / "jouled" / "ingest" / "_roots.c").write_text("")
    (tmp_path / "jouled" / "ingest" / "_roots.cpython-311-x86_64-linux-gnu.so").write_text("")
    assert unbuilt(tmp_path) == ["jouled/ingest/_otlpscan.c"]


def test_what_is_neither_a_checkout_nor_a_revision_is_refused() -> None:
    with (
        pytest.raises(RuntimeError, match="neither a checkout"),
        tree("no-such-rev~3", sys.executable),
    ):
        pass


def test_a_directory_outside_git_is_taken_as_it_is_and_this_checkout_says_its_commit(
    tmp_path: Path,
) -> None:
    (tmp_path / "jouled").mkdir()
    (tmp_path / "jouled" / "__init__.py").write_text("")
    with tree(str(tmp_path), sys.executable) as (root, what):
        assert (root, what) == (tmp_path.resolve(), str(tmp_path.resolve()))
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with tree(str(ROOT), sys.executable) as (root, what):
        assert root == ROOT.resolve()
        assert what.startswith(f"{ROOT.resolve()} at {head}")
    assert (tmp_path / "jouled").exists()  # a directory given is never removed


def _export(d: DaemonProc, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        d.ingest_url + "/v1/traces",
        data=body,
        headers={"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def _batch() -> bytes:
    """Two spans ending now: one of the configured workload, one of a workload that is not
    (refused as unknown_workload when decoded)."""
    return otlp_batch(2, workloads=["w0", "nope"], models=["m"], end_ns=time.time_ns())


def _metric(d: DaemonProc, name: str) -> float:
    text = d.metrics().decode()
    return float(text.split(f"\n{name} ", 1)[1].split("\n", 1)[0])


@pytest.mark.parametrize(
    ("patch", "rejected"),
    [("ceiling_receive_only.patch", 0), ("ceiling_decode_only.patch", 1)],
)
def test_the_ceilings_apply_to_this_revision_and_cut_where_they_say(
    tmp_path: Path, patch: str, rejected: int
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    cfg = {"workloads": workload_configs(1)}
    path = ROOT / "benchmarks" / "patches" / patch
    with tree("HEAD", sys.executable, path) as (root, what):
        assert what.endswith(f" + {path}")
        assert unbuilt(root) == []
        with daemon(tmp_path, cfg, root=root) as d:
            time.sleep(1.5)  # ticks running: spans ending now are not late
            status, body = _export(d, _batch())
            assert status == 200
            # Only a decoded body has its spans validated; neither ceiling queues any.
            response = ExportTraceServiceResponse.FromString(body)
            assert response.partial_success.rejected_spans == rejected
            time.sleep(2.5)  # two ticks: what was queued is counted by now
            assert _metric(d, "jouled_spans_pending") == 0.0
            assert _metric(d, "jouled_spans_received_total") == 0.0
    # This checkout, unpatched: the unknown workload's span refused, the other queued.
    (tmp_path / "head").mkdir()
    with daemon(tmp_path / "head", cfg) as d:
        time.sleep(1.5)
        status, body = _export(d, _batch())
        assert ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans == 1
        wait_for(lambda: _metric(d, "jouled_spans_pending") == 1.0, 10, "the span pending")
        assert _metric(d, "jouled_spans_received_total") == 2.0  # the refused one counts too


def test_a_patch_that_does_not_apply_is_refused_with_gits_words(tmp_path: Path) -> None:
    patch = tmp_path / "stale.patch"
    patch.write_text(
        "--- a/jouled/no_such_module.py\n+++ b/jouled/no_such_module.py\n@@ -1 +1 @@\n-a\n+b\n"
    )
    with (
        pytest.raises(RuntimeError, match=r"does not apply to HEAD: .*no_such_module"),
        tree("HEAD", sys.executable, patch),
    ):
        pass
    with (
        pytest.raises(RuntimeError, match="a patch applies to a revision"),
        tree(str(ROOT), sys.executable, patch),
    ):
        pass
