"""Work from tokens on the ingest path: what ``spans.model_configs`` adds per span.

In-process, one thread: jouled-schema batches of 512 spans, each with input and output token
counts (shapes from 16 + 4 to 4,096 + 1,024 tokens, 50 models), decoded three ways: every
model with a config.json (prefill + decode GFLOPs, ``RequestWork``), every model with a flat
``gflops_per_token``, and spans that carry ``gflops`` themselves (no token arithmetic).
Also the bare cost of one ``RequestWork`` call.

    .venv/bin/python -m benchmarks.token_work [--batches 100]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

from benchmarks._util import exit_on_sigterm, save
from jouled.costmodel import datasets
from jouled.costmodel.decoder import RequestWork
from jouled.costmodel.flops import load_config
from jouled.ingest.decode import decode_spans_json
from jouled.ingest.rules import Rules

MODELS = [f"model-{i}" for i in range(50)]
CONFIGS = ["Meta-Llama-3-8B", "Mistral-7B-v0.1", "Mixtral-8x7B-v0.1", "Qwen1.5-MoE-A2.7B"]


def _bodies(batches: int, size: int, *, with_gflops: bool) -> list[bytes]:
    rng = random.Random(7)
    end_ns = time.time_ns()
    out = []
    for _ in range(batches):
        spans = []
        for i in range(size):
            span: dict[str, Any] = {
                "workload": "llm",
                "model": MODELS[i % len(MODELS)],
                "start_unix_nano": end_ns - 5_000_000,
                "end_unix_nano": end_ns,
                "input_tokens": rng.choice((16, 128, 512, 2048, 4096)),
                "output_tokens": rng.choice((4, 64, 256, 1024)),
            }
            if with_gflops:
                span["gflops"] = 97.1
            spans.append(span)
        out.append(json.dumps({"spans": spans}).encode())
    return out


def _rate(bodies: list[bytes], rules: Rules) -> float:
    spans = 0
    c0 = time.process_time()
    for body in bodies:
        spans += len(decode_spans_json(body, rules).spans)
    return spans / (time.process_time() - c0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=512)
    args = p.parse_args()
    costs = {
        m: RequestWork.from_config(load_config(datasets.resolve_config(CONFIGS[i % 4])))
        for i, m in enumerate(MODELS)
    }
    now = time.time()
    variants = {
        "model_configs": Rules(now=now, known_workloads={"llm"}, token_costs=costs),
        "gflops_per_token": Rules(
            now=now, known_workloads={"llm"}, gflops_per_token=dict.fromkeys(MODELS, 15.0)
        ),
        "gflops_attribute": Rules(now=now, known_workloads={"llm"}),
    }
    tokens_only = _bodies(args.batches, args.batch_size, with_gflops=False)
    with_gflops = _bodies(args.batches, args.batch_size, with_gflops=True)
    results: dict[str, Any] = {"batches": args.batches, "batch_size": args.batch_size}
    for name, rules in variants.items():
        bodies = with_gflops if name == "gflops_attribute" else tokens_only
        rate = _rate(bodies, rules)
        results[name] = {"spans_per_cpu_s": rate, "us_per_span": 1e6 / rate}
        print(f"{name:17} {rate:9,.0f} spans/CPU-s  {1e6 / rate:6.2f} us per span", flush=True)
    work = costs[MODELS[0]]
    calls = 200_000
    c0 = time.process_time()
    for i in range(calls):
        work(512 + (i & 1023), 128)
    ns = (time.process_time() - c0) / calls * 1e9
    results["request_work_call_ns"] = ns
    print(f"one RequestWork call: {ns:.0f} ns")
    print("saved", save("token_work", results))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
