"""Server-metrics mode: an inference server's own Prometheus ``/metrics`` page, read each
tick, turned into per-model token and request counts (no spans needed).

The page is parsed with prometheus-client's parser; only the families below are read, and
every other family is ignored. Names, types and labels are the servers' own (sources):

- vLLM (``vllm/v1/metrics/loggers.py``, ``PrometheusStatLogger``): counters
  ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
  ``vllm:request_success_total``; labels ``model_name``, ``engine`` (and ``finished_reason``
  on request_success).
- SGLang (``python/sglang/srt/metrics/collector.py``, ``TokenizerMetricsCollector``):
  counters ``sglang:prompt_tokens_total``, ``sglang:generation_tokens_total``,
  ``sglang:num_requests_total``; labels ``model_name``, ``engine_type``.
- Text Generation Inference (``router/src/server.rs`` and ``router/src/validation.rs``,
  rendered by the Rust ``metrics-exporter-prometheus`` crate): histograms
  ``tgi_request_input_length`` and ``tgi_request_generated_tokens`` (their ``_sum`` is the
  tokens), counter ``tgi_request_success`` (written without ``_total``); no model label
  (one model per server: ``server_metrics.model`` or ``workloads[].model`` names it).
- Triton (``triton-inference-server/core`` ``src/metrics.cc``: counter
  ``nv_inference_request_success``, labels ``model``, ``version``) with the TensorRT-LLM
  backend (``NVIDIA/TensorRT-LLM``
  ``triton_backend/inflight_batcher_llm/src/custom_metrics_reporter/custom_metrics_reporter.cc``:
  histograms ``nv_llm_input_token_len`` and ``nv_llm_output_token_len``, labels ``model``,
  ``version``, ``response_metric_type``).

Per model the series of one family are summed over their other labels (engines, finish
reasons, versions). Any counter of a model that goes down means that model's counters
restarted (the server restarted, or Triton reloaded that one model): then every counter of
that model counts from zero, never a negative delta; the other models' counters go on.
(A restart after which every counter is back above its old value before the next read
cannot be seen from the counters, as with Prometheus's own ``increase()``, unless the
server shows when each counter was created: prometheus-client's ``_created`` samples,
which vLLM and SGLang write, reveal such a restart too.)

A page that lists one series twice, or holds a count that is negative, not finite or over
2^53 (past which a float no longer counts by ones: no server gets there) is refused whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.parser import text_string_to_metric_families

from jouled.labels import sanitize_label

Kind = Literal["input", "output", "requests"]
KINDS: tuple[Kind, ...] = ("input", "output", "requests")


@dataclass(frozen=True, slots=True)
class Family:
    """One recognized family: the sample that carries the count and the model's label."""

    server: str
    family: str  # the family name as prometheus-client's parser reports it
    sample: str  # the sample that holds the running count
    kind: Kind
    model_label: str | None  # None: the server serves one model and labels none


FAMILIES: tuple[Family, ...] = (
    Family("vllm", "vllm:prompt_tokens", "vllm:prompt_tokens_total", "input", "model_name"),
    Family(
        "vllm", "vllm:generation_tokens", "vllm:generation_tokens_total", "output", "model_name"
    ),
    Family("vllm", "vllm:request_success", "vllm:request_success_total", "requests", "model_name"),
    Family("sglang", "sglang:prompt_tokens", "sglang:prompt_tokens_total", "input", "model_name"),
    Family(
        "sglang",
        "sglang:generation_tokens",
        "sglang:generation_tokens_total",
        "output",
        "model_name",
    ),
    Family("sglang", "sglang:num_requests", "sglang:num_requests_total", "requests", "model_name"),
    Family("tgi", "tgi_request_input_length", "tgi_request_input_length_sum", "input", None),
    Family(
        "tgi", "tgi_request_generated_tokens", "tgi_request_generated_tokens_sum", "output", None
    ),
    # metrics-exporter-prometheus writes the counter without _total; the parser adds it.
    Family("tgi", "tgi_request_success", "tgi_request_success_total", "requests", None),
    Family("triton", "nv_llm_input_token_len", "nv_llm_input_token_len_sum", "input", "model"),
    Family("triton", "nv_llm_output_token_len", "nv_llm_output_token_len_sum", "output", "model"),
    Family(
        "triton",
        "nv_inference_request_success",
        "nv_inference_request_success_total",
        "requests",
        "model",
    ),
)
_BY_FAMILY = {f.family: f for f in FAMILIES}
# The lines parse_page reads: samples of the recognized families (buckets aside) and their
# TYPE/HELP lines. Everything else on the page is dropped before prometheus-client parses
# it: an 8 MiB page of other families took ~8 s of CPU and ~100 MiB to parse, per read.
_WANTED_LINE = re.compile(
    r"^(?:# (?:TYPE|HELP) )?(?:"
    + "|".join(re.escape(f.family) for f in FAMILIES)
    + r")(?:_total|_sum|_count|_created)?(?=[{ \t]).*$",
    re.MULTILINE,
)

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)

# The largest count accepted: floats count by ones up to 2^53, and sums of up to
# ``max_series`` of them stay far from overflowing.
MAX_COUNT = float(2**53)


class PageError(ValueError):
    """The page is not Prometheus text, or carries none of the recognized families."""


@dataclass(frozen=True, slots=True)
class Series:
    key: SeriesKey
    model: str
    kind: Kind
    value: float


@dataclass(frozen=True, slots=True)
class Page:
    """The recognized series of one read of the page."""

    servers: frozenset[str]
    series: tuple[Series, ...]
    # When each counter was created (prometheus-client servers: vLLM, SGLang), where shown.
    created: tuple[tuple[SeriesKey, float], ...] = ()


def parse_page(text: str, *, default_model: str, max_series: int = 10_000) -> Page:
    """Recognized series of a ``/metrics`` page, by model.

    ``default_model`` names the model of a server whose families carry no model label (TGI).
    Raises ``PageError`` when the text does not parse, when a recognized series holds a
    negative or non-finite count or one over ``MAX_COUNT``, when a series is listed twice
    (its increase would count twice), or when no recognized family is present.
    """
    out: list[Series] = []
    keys: set[SeriesKey] = set()
    created: list[tuple[SeriesKey, float]] = []
    servers: set[str] = set()
    wanted = _WANTED_LINE.findall(text)
    # At most a count, a sum and a creation time per series: past that, refused unparsed.
    samples = sum(1 for line in wanted if not line.startswith("#"))
    if samples > 3 * max_series:
        raise PageError(f"more than {max_series} recognized series on one page")
    try:
        for fam in text_string_to_metric_families("\n".join(wanted) + "\n"):
            spec = _BY_FAMILY.get(fam.name)
            if spec is None:
                base = _BY_FAMILY.get(fam.name.removesuffix("_created"))
                if base is not None and fam.name.endswith("_created"):
                    for s in fam.samples[: max_series + 1]:
                        if math.isfinite(s.value) and s.value >= 0:  # NaN never "stays put"
                            key = (base.sample, tuple(sorted(s.labels.items())))
                            created.append((key, s.value))
                continue
            for s in fam.samples:
                if s.name != spec.sample:
                    continue
                if not math.isfinite(s.value) or s.value < 0:
                    raise PageError(f"{s.name} holds {s.value!r}: a count must be finite and >= 0")
                if s.value > MAX_COUNT:
                    raise PageError(f"{s.name} holds {s.value!r}: a count must be at most 2^53")
                key = (s.name, tuple(sorted(s.labels.items())))
                if key in keys:
                    raise PageError(
                        f"{s.name}{dict(key[1])} is listed twice on the page: "
                        "each series must appear once"
                    )
                keys.add(key)
                # A label from outside: cut and cleaned like a span's (a model name of
                # megabytes would otherwise be exported as it came).
                raw = s.labels.get(spec.model_label, "") if spec.model_label else ""
                model = sanitize_label(raw)
                out.append(
                    Series(
                        key=key,
                        model=model or default_model,
                        kind=spec.kind,
                        value=float(s.value),
                    )
                )
                servers.add(spec.server)
                if len(out) > max_series:
                    raise PageError(f"more than {max_series} recognized series on one page")
    except PageError:
        raise
    except Exception as exc:  # the parser raises ValueError/IndexError/... on bad text
        raise PageError(f"not Prometheus text: {type(exc).__name__}: {exc}") from None
    if not out:
        raise PageError(
            "no token or request counters of vLLM, SGLang, TGI or Triton on the page "
            "(is this the inference server's own /metrics endpoint?)"
        )
    return Page(frozenset(servers), tuple(out), tuple(created))


@dataclass(frozen=True, slots=True)
class Counts:
    """Tokens and requests of one model since the previous read."""

    input: float = 0.0
    output: float = 0.0
    requests: float = 0.0

    def get(self, kind: Kind) -> float:
        value: float = getattr(self, kind)
        return value


@dataclass(slots=True)
class CounterFollower:
    """Turns successive pages into per-model increases; a counter that goes down (or whose
    ``_created`` time moved) means its model's counters restarted, and that model's counters
    count from zero (``increase()`` does the same per series); other models' go on.

    The first page is a baseline (no increase); a series first seen on a later page counts
    from zero (a model loaded, a finish reason seen for the first time).
    """

    last: dict[SeriesKey, float] = field(default_factory=dict)
    last_created: dict[SeriesKey, float] = field(default_factory=dict)
    resets: int = 0
    primed: bool = False
    # False once a creation time moved on two reads in a row: the server rewrites it (no
    # process restarts that fast), and counting a "restart" each read would count its
    # lifetime totals again and again. Then only counters that go down tell a restart.
    created_trusted: bool = True
    _created_moved: frozenset[SeriesKey] = frozenset()
    max_series: int = 10_000

    def advance(self, page: Page) -> dict[str, Counts]:
        seen = {s.key: s.value for s in page.series}
        model_of = {s.key: s.model for s in page.series}
        created = dict(page.created)
        # One process counts a model's series: if any of them went down, that model's
        # counters restarted (the server, or Triton reloading the model) and each of them
        # counts from zero (a series that happens to be back at or above its old value is
        # no increase over it). A counter created anew (its _created timestamp moved on)
        # restarted too, even when it is already back above its old value. Other models'
        # counters go on: one model's reset is no reason to count their totals again.
        restarted: set[str] = set()
        if self.primed:
            restarted.update(model_of[k] for k, v in seen.items() if v < self.last.get(k, v))
            moved = frozenset(
                k for k, t in created.items() if k in model_of and t > self.last_created.get(k, t)
            )
            if moved & self._created_moved:
                self.created_trusted = False
            self._created_moved = moved
            if self.created_trusted:
                restarted.update(model_of[k] for k in moved)
        if restarted:
            self.resets += 1
        acc: dict[str, dict[Kind, float]] = {}
        for s in page.series:
            prev = self.last.get(s.key)
            if not self.primed:
                delta = 0.0
            elif prev is None or s.model in restarted:
                delta = s.value
            else:
                delta = s.value - prev
            per = acc.setdefault(s.model, {})
            per[s.kind] = per.get(s.kind, 0.0) + delta
        # A series missing from one page keeps its last value (a restarted server lists it
        # again once used; lower then, it is a reset). Bounded: labels that churn start over.
        merged = {**self.last, **seen}
        self.last = merged if len(merged) <= 2 * self.max_series else seen
        merged_created = {**self.last_created, **created}
        self.last_created = (
            merged_created if len(merged_created) <= 2 * self.max_series else created
        )
        self.primed = True
        return {m: Counts(**{k: v for k, v in per.items()}) for m, per in acc.items()}


def merge(counts: Iterable[Mapping[str, Counts]]) -> dict[str, Counts]:
    """Per-model sums of several reads' increases."""
    out: dict[str, Counts] = {}
    for one in counts:
        for model, c in one.items():
            was = out.get(model, Counts())
            out[model] = Counts(
                was.input + c.input, was.output + c.output, was.requests + c.requests
            )
    return out
