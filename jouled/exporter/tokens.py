"""``jouled_tokens_total{workload, model, kind}``: the one definition of the token counter.

Two sources fill it, like ``jouled_model_energy_joules_total``: a workload in server-metrics
mode counts what its inference server reported; any other workload counts the tokens of its
settled request spans (``gen_ai.usage.input_tokens``/``output_tokens`` and the other names
in ``ingest.attributes``). ``kind`` is ``input`` (prompt, prefill) or ``output`` (generated,
decode).
"""

from __future__ import annotations

from typing import Final

from prometheus_client.metrics_core import CounterMetricFamily

from jouled.exporter.attribution import section_of
from jouled.pipeline.snapshot import Snapshot

NAME: Final = "jouled_tokens"  # exported as jouled_tokens_total
HELP: Final = (
    "Tokens processed per workload and model; kind: input (prompt) or output (generated). "
    "From the inference server's counters (server_metrics), else from settled request spans."
)
LABELS: Final = ("workload", "model", "kind")
INPUT: Final = "input"
OUTPUT: Final = "output"
KINDS: Final = (INPUT, OUTPUT)

TokenCounts = dict[tuple[str, str, str], float]  # (workload, model, kind) -> tokens


def token_counts(snapshot: Snapshot) -> TokenCounts:
    """Tokens per (workload, model, kind): the server's counts for workloads in
    server-metrics mode, the settled spans' counts for the others."""
    out: TokenCounts = {}
    server = snapshot.server_metrics
    skip = server.workloads if server is not None else frozenset()
    section = section_of(snapshot)
    if section is not None:
        for (workload, model), stats in section.requests.items():
            if workload in skip:
                continue
            if stats.input_tokens:
                out[(workload, model, INPUT)] = float(stats.input_tokens)
            if stats.output_tokens:
                out[(workload, model, OUTPUT)] = float(stats.output_tokens)
    if server is not None:
        out.update(server.tokens)
    return out


def tokens_family(snapshot: Snapshot) -> CounterMetricFamily:
    """The ``jouled_tokens_total`` family, samples sorted by label values."""
    family = CounterMetricFamily(NAME, HELP, labels=list(LABELS))
    for key, value in sorted(token_counts(snapshot).items()):
        family.add_metric(list(key), float(value))
    return family
