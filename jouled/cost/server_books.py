"""The ledger's model rows for workloads in server-metrics mode (``workloads[].server_metrics``).

With spans, a model's ledger row is the energy and count of its settled requests. A workload
whose inference server reports its own counters has no spans to settle (or, with both,
``jouled_requests_total`` and ``jouled_model_energy_joules_total`` already count the
server's figures, not the spans'): its model rows are each tick's increase of the server's
request counter and of the workload energy jouled split to the model by the server's work
(docs/TOKENS.md). So ``jouled report --by model`` books what /metrics exports, in both modes.

Stdlib only: it reads the server-metrics section of the snapshot (cumulative since start).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jouled.pipeline.server_metrics import ServerMetricsSnapshot

Key = tuple[str, str]  # (workload, model)


@dataclass(frozen=True, slots=True)
class ModelDelta:
    """One (workload, model)'s increase since the last tick."""

    requests: int
    energy_j: float


@dataclass(slots=True)
class ServerModelDeltas:
    """Per-tick increases of the server-metrics section's cumulative figures."""

    _last: dict[Key, tuple[float, float]] = field(default_factory=dict)

    def take(self, server: ServerMetricsSnapshot | None) -> dict[Key, ModelDelta]:
        """Each (workload, model) whose requests or energy grew since the last call.

        Requests are the server's counter (a float in the exposition), booked as whole
        requests: the fraction waits for the next tick, so none is lost or counted twice.
        """
        out: dict[Key, ModelDelta] = {}
        if server is None:
            return out
        for key in server.model_energy_j.keys() | server.requests.keys():
            n1 = server.requests.get(key, 0.0)
            j1 = server.model_energy_j.get(key, 0.0)
            n0, j0 = self._last.get(key, (0.0, 0.0))
            whole = max(0, int(n1 - n0))
            joules = max(0.0, j1 - j0)  # cumulative: a negative step is not energy
            self._last[key] = (n0 + whole if n1 >= n0 else n1, max(j0, j1))
            if whole > 0 or joules > 0:
                out[key] = ModelDelta(whole, joules)
        return out
