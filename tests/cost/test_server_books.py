"""Server-metrics mode in the ledger: a workload whose inference server reports its own
counters gets model rows from them (requests and the energy jouled split to the model by
the server's work), as /metrics exports them, so `jouled report --by model` is not empty;
its spans, if it sends any too, are not booked a second time."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from jouled import config
from jouled.cost.live import CostStage
from jouled.cost.server_books import ModelDelta, ServerModelDeltas
from jouled.ledger import Ledger
from jouled.pipeline.cost import CostDelta
from jouled.pipeline.server_metrics import ServerMetricsSnapshot
from tests.cost.helpers import T0, attribution, snapshot, tick
from tests.cost.test_report import run


def server(requests: float, joules: float) -> ServerMetricsSnapshot:
    key = ("chat", "llama-3-8b")
    return ServerMetricsSnapshot(
        model_energy_j={key: joules},
        tokens={(*key, "output"): 40.0 * requests},
        requests={key: requests},
        status={},
        resets={},
        unserved_j={},
        pending_j={},
        workloads=frozenset({"chat"}),
    )


# Cumulative server requests and model joules at ticks 1..3; the third read has half a
# request more and no energy: whole requests are booked, the half waits.
READS = [(10.0, 5.0), (25.5, 12.0), (26.0, 12.0)]


def test_deltas_book_whole_requests_and_lose_no_fraction() -> None:
    deltas = ServerModelDeltas()
    got = [deltas.take(server(n, j)) for n, j in READS]
    key = ("chat", "llama-3-8b")
    assert got == [
        {key: ModelDelta(10, 5.0)},
        {key: ModelDelta(15, 7.0)},
        {key: ModelDelta(1, 0.0)},  # 25.5 -> 26.0 completes the 26th request
    ]
    assert deltas.take(None) == {}


def book(path: Path) -> list[CostDelta]:
    cfg = config.validate({"cost": {"pue": 1.5, "grid_intensity": 400}}, "t").cost
    ledger = Ledger(path)
    assert ledger.open()
    seen: list[CostDelta] = []

    def sink(delta: CostDelta) -> None:
        seen.append(delta)
        ledger.add(delta)

    stage = CostStage(cfg, sink=sink)
    for i, (n, j) in enumerate(READS, start=1):
        # chat also sends spans (3 per tick, 1 J each): /metrics counts the server's figures
        # for it, and so does the ledger. api has spans only: booked from them.
        section = attribution(
            {("chat", "cpu", "rapl"): 20.0 * i, ("api", "cpu", "rapl"): 9.0 * i},
            {("chat", "llama-3-8b"): (3 * i, 1.0 * i, 0.0), ("api", "bert"): (2 * i, 4.0 * i, 0.0)},
        )
        snap = replace(snapshot(section), server_metrics=server(n, j))
        stage.on_tick(tick(i, {("cpu", "rapl"): 100.0}), snap)
    ledger.flush()
    ledger.close()
    return seen


def test_the_cost_stage_books_the_servers_figures_not_the_spans(tmp_path: Path) -> None:
    deltas = book(tmp_path / "l.db")
    chat = [d.requests[("chat", "llama-3-8b")] for d in deltas]
    assert [(b.count, b.energy_j) for b in chat] == [(10, 5.0), (15, 7.0), (1, 0.0)]
    # 7 J x 1.5 / 3.6e6 kWh x 400 g/kWh
    assert chat[1].emissions_g == 7.0 * 1.5 / 3.6e6 * 400
    api = [d.requests[("api", "bert")] for d in deltas]
    assert [(b.count, b.energy_j) for b in api] == [(2, 4.0), (2, 4.0), (2, 4.0)]


def test_report_by_model_shows_the_server_metrics_model(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    book(path)
    code, text = run(
        "--ledger", str(path), "--since", str(T0 - 60), "--by", "model", "--format", "json"
    )
    assert code == 0
    rows = {(r["workload"], r["model"]): r for r in json.loads(text)["rows"]}
    assert (
        rows[("chat", "llama-3-8b")]["requests"],
        rows[("chat", "llama-3-8b")]["energy_joules"],
    ) == (26, 12.0)
    assert (rows[("api", "bert")]["requests"], rows[("api", "bert")]["energy_joules"]) == (6, 12.0)
