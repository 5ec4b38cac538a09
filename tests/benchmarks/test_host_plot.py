"""benchmarks.host_plot: the daemon's CPU against the host's speed, from daemon_cpu results."""

import json
from pathlib import Path

import pytest

from benchmarks.host_plot import crossing, fit, main, points


def _payload(rows: list[tuple[float, float, float]]) -> dict[str, object]:
    """daemon_cpu's shape: one run per (host µs, HTTP %, gRPC %), a no-span row in each."""
    runs = []
    for host, http, grpc in rows:
        runs.append(
            {
                "settle_seconds": 30.0,
                "no_spans": {"cpu_percent_of_one_core": 0.2, "host_python_us": host},
                "http_1000": {"cpu_percent_of_one_core": http, "host_python_us": host},
                "grpc_1000": {"cpu_percent_of_one_core": grpc, "host_python_us": host},
                "http_100": {"cpu_percent_of_one_core": 9.9, "host_python_us": host},
            }
        )
    return {"date": "2026-12-03T07:00:00+00:00", "results": {"runs": runs}}


def test_rows_at_the_rate_with_a_host_speed_are_taken_and_others_left_out() -> None:
    old = {"results": {"runs": [{"http_1000": {"cpu_percent_of_one_core": 0.8}}]}}
    got = points([_payload([(500.0, 1.0, 1.2), (1000.0, 2.0, 2.2)]), old], 1000)
    assert got == {
        "http": [(500.0, 1.0), (1000.0, 2.0)],
        "grpc": [(500.0, 1.2), (1000.0, 2.2)],
        "no spans": [(500.0, 0.2), (1000.0, 0.2)],
    }
    assert points([old], 1000) == {}


def test_the_line_and_where_it_crosses_the_target() -> None:
    line = fit([(500.0, 1.0), (1000.0, 2.0), (1500.0, 3.0)])
    assert line == pytest.approx((0.0, 0.002))
    assert line is not None and crossing(line) == pytest.approx(500.0)
    assert crossing((0.5, 0.001)) == pytest.approx(500.0)
    assert fit([(700.0, 1.0)]) is None  # one host speed says nothing of a slope
    assert crossing((1.0, -0.001)) is None


def test_main_writes_the_plot_and_names_the_host_speed_the_target_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "daemon_cpu.json"
    results.write_text(json.dumps(_payload([(600.0, 1.1, 1.3), (1200.0, 2.3, 2.7)])))
    out = tmp_path / "plot.png"
    main([str(results), "--out", str(out)])
    printed = capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1 % at a host of 550 µs" in printed  # http: 1.1 + 0.002 * (x - 600) = 1
    assert "grpc     2 rows, host 600-1200 µs, CPU 1.30-2.70 %" in printed


def test_each_file_is_labelled_with_its_date_and_host_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import host_plot

    amd, intel = tmp_path / "amd.json", tmp_path / "intel.json"
    amd.write_text(json.dumps(_payload([(1200.0, 2.3, 2.7)]) | {"machine": {"cpu": "AMD EPYC"}}))
    intel.write_text(
        json.dumps(
            _payload([(350.0, 0.9, 1.0)]) | {"machine": {"cpu": "Intel(R) Xeon(R) Processor"}}
        )
    )
    seen: list[str] = []
    monkeypatch.setattr(
        host_plot, "plot", lambda per_source, rate, out: seen.extend(s for s, _ in per_source)
    )
    main([str(amd), str(intel), "--out", str(tmp_path / "p.png")])
    assert seen == ["amd.json (2026-12-03, AMD EPYC)", "intel.json (2026-12-03, Intel Xeon)"]
