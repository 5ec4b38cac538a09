"""benchmarks.memory_plot: resident memory by minute, from daemon_memory results."""

import json
from pathlib import Path

import pytest

from benchmarks.memory_plot import main, series, summary


def _payload(grpc: list[float], http: list[float] | None = None) -> dict[str, object]:
    transports = {"grpc": {"rss_mb_max_by_minute": grpc}}
    if http is not None:
        transports["http"] = {"rss_mb_max_by_minute": http}
    return {"date": "2026-12-04T05:00:00+00:00", "results": {"transports": transports}}


def test_each_transport_is_a_line_and_the_summary_reads_after_minute_5() -> None:
    got = series(_payload([70.0, 71.0], [60.0]), "after")
    assert got == [("after, OTLP/gRPC", [70.0, 71.0]), ("after, OTLP/HTTP", [60.0])]
    rows = [70.0, 71.0, 72.0, 72.5, 73.0, 73.5, 74.5, 74.0]
    most, slope = summary(rows)
    assert most == 74.5
    assert slope == pytest.approx((74.0 - 73.0) / 3)
    assert summary(rows[:5]) == (None, None)


def test_main_writes_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "a.json"
    a.write_text(json.dumps(_payload([78.0 + 0.2 * i for i in range(10)])))
    out = tmp_path / "m.png"
    assert main([f"{a}:before", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "before, OTLP/gRPC: at most 79.8 MB after minute 5, +0.20 MB a minute" in printed
    empty = tmp_path / "e.json"
    empty.write_text(json.dumps({"results": {}}))
    with pytest.raises(SystemExit):
        main([str(empty), "--out", str(out)])
