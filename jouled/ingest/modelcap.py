"""The cap on distinct models per workload that the ingest app applies to decoded spans."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from jouled.attribution.spans import Span
from jouled.ingest.rules import OTHER_MODEL


class ModelCap:
    """Caps the distinct models per workload; models past the cap become ``other``.

    Each model is a label value of several series; an unbounded set from the network would
    grow Prometheus without limit.
    """

    def __init__(self, max_models: int = 50, max_workloads: int = 1000) -> None:
        if max_models < 1 or max_workloads < 1:
            raise ValueError("max_models and max_workloads must be >= 1")
        self._max_models = max_models
        self._max_workloads = max_workloads
        self._seen: dict[str, set[str]] = {}
        self.capped = 0  # spans whose model was replaced by "other"

    def apply(self, workload: str, model: str) -> str:
        seen = self._seen.get(workload)
        if seen is None:
            if len(self._seen) >= self._max_workloads:
                self.capped += 1
                return OTHER_MODEL
            seen = self._seen[workload] = set()
        if model in seen or model == OTHER_MODEL:
            return model
        if len(seen) >= self._max_models:
            self.capped += 1
            return OTHER_MODEL
        seen.add(model)
        return model

    def models(self, workload: str) -> frozenset[str]:
        return frozenset(self._seen.get(workload, ()))

    def apply_to(self, spans: Iterable[Span]) -> list[Span]:
        """``spans`` with models past the cap replaced by ``other``; a model its workload
        has sent before passes without an ``apply`` call (the common case, once per span)."""
        out: list[Span] = []
        seen = self._seen
        for span in spans:
            models = seen.get(span.workload)
            if models is not None and span.model in models:
                out.append(span)
                continue
            model = self.apply(span.workload, span.model)
            out.append(span if model == span.model else replace(span, model=model))
        return out


def apply_model_cap(spans: Iterable[Span], cap: ModelCap) -> list[Span]:
    """Spans with models past the per-workload cap replaced by ``other``."""
    return cap.apply_to(spans)
