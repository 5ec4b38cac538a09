"""The example inference server: a real forward pass, GFLOPs from jouled's own FLOPs model,
and a span per request in the schema jouled's ingest decodes."""

import asyncio
import json
import time

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from examples.inference_server.model import (
    CLS_ID,
    MAX_TOKENS,
    SEP_ID,
    TinyBert,
    gflops_for,
    tokenize,
)
from examples.inference_server.server import build_app
from jouled.costmodel.flops import count
from jouled.ingest.decode import decode_spans_json
from jouled.ingest.rules import Rules


@pytest.fixture(scope="module")
def model() -> TinyBert:
    return TinyBert()


def test_tokenizer_frames_and_truncates() -> None:
    ids = tokenize("Hello, world!", 8192)
    assert ids[0] == CLS_ID and ids[-1] == SEP_ID and len(ids) == 6
    assert all(1000 <= i < 8192 for i in ids[1:-1])
    assert len(tokenize("word " * 1000, 8192)) == MAX_TOKENS


def test_forward_gives_a_distribution_over_the_labels(model: TinyBert) -> None:
    probs = model.forward(model.tokens("Markets rally after the rate decision."))
    assert probs.shape == (len(model.labels),)
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(
        probs, model.forward(model.tokens("Markets rally after the rate decision."))
    )


def test_gflops_are_jouled_model_flops_at_each_texts_length(model: TinyBert) -> None:
    texts = ["short one", "a somewhat longer sentence about the weather today"]
    batch = model.classify(texts)
    lengths = [len(model.tokens(t)) for t in texts]
    assert batch.tokens == sum(lengths)
    expected = sum(count(model.config, seq_len=n).gflops for n in lengths)
    assert batch.gflops == pytest.approx(expected)
    assert gflops_for(model.config, lengths) == pytest.approx(expected)
    # Work grows with tokens: the longer text costs more.
    assert count(model.config, lengths[1]).gflops > count(model.config, lengths[0]).gflops


def test_matmul_gflops_match_the_weights_the_forward_pass_multiplies(model: TinyBert) -> None:
    # 2 FLOPs per multiply-add over every weight matrix a token passes through, plus the
    # attention products: an independent count of what forward() does.
    n, h = 12, model.hidden
    per_layer = sum(
        2 * n * p[k].shape[0] * p[k].shape[1]
        for p in model.layers[:1]
        for k in ("qkv", "o", "up", "down")
    )
    attention = 2 * 2 * n * n * h
    head = 2 * h * h + 2 * h * len(model.labels)
    expected = len(model.layers) * (per_layer + attention) + head
    assert count(model.config, n).matmul_gflops == pytest.approx(expected / 1e9)


async def _ingest_app(received: list[dict]) -> web.Application:
    async def spans(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"accepted": 1, "rejected": 0})

    app = web.Application()
    app.router.add_post("/v1/spans", spans)
    return app


async def test_each_request_becomes_one_span_jouled_accepts(model: TinyBert) -> None:
    received: list[dict] = []
    ingest = TestServer(await _ingest_app(received))
    await ingest.start_server()
    ingest_url = str(ingest.make_url("/")).rstrip("/")
    client = TestClient(TestServer(build_app(model, ingest_url=ingest_url, workload="clf")))
    await client.start_server()
    try:
        before = time.time()
        resp = await client.post(
            "/predict", json={"instances": [{"text": "Rates hold."}, {"text": "Team wins."}]}
        )
        assert resp.status == 200
        answer = await resp.json()
        assert len(answer["predictions"]) == 2
        assert {p["label"] for p in answer["predictions"]} <= set(model.labels)
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.05)
    finally:
        await client.close()
        await ingest.close()
    assert len(received) == 1 and len(received[0]["spans"]) == 1
    span = received[0]["spans"][0]
    assert span["workload"] == "clf" and span["model"] == "tiny-bert"
    assert span["gflops"] == pytest.approx(answer["gflops"]) and span["gflops"] > 0
    assert span["input_tokens"] == answer["tokens"]
    assert before <= span["start"] <= span["end"]  # jouled.client sends unix seconds
    decoded = decode_spans_json(
        json.dumps(received[0]).encode(), Rules(now=time.time(), known_workloads={"clf"})
    )
    assert decoded.rejected_total == 0 and len(decoded.spans) == 1
    assert decoded.spans[0].gflops == pytest.approx(answer["gflops"])


@pytest.mark.parametrize(
    "body", [{"texts": ["x"]}, {"instances": []}, {"instances": [{"txt": "x"}]}, "not json"]
)
async def test_bad_bodies_are_400(model: TinyBert, body: object) -> None:
    client = TestClient(TestServer(build_app(model, ingest_url=None)))
    await client.start_server()
    try:
        if isinstance(body, str):
            resp = await client.post("/predict", data=body)
        else:
            resp = await client.post("/predict", json=body)
        assert resp.status == 400
    finally:
        await client.close()


async def test_metrics_page_counts_prompt_tokens_as_vllm_does(model: TinyBert) -> None:
    from jouled.collectors.server_metrics import CounterFollower, Counts, parse_page

    client = TestClient(TestServer(build_app(model, ingest_url=None, vllm_metrics=True)))
    await client.start_server()
    try:
        follower = CounterFollower()
        follower.advance(parse_page(await (await client.get("/metrics")).text(), default_model="x"))
        tokens = 0
        for texts in (["short one"], ["a longer text about the rate decision", "and one more"]):
            resp = await client.post("/predict", json={"instances": [{"text": t} for t in texts]})
            tokens += (await resp.json())["tokens"]
        page = parse_page(await (await client.get("/metrics")).text(), default_model="x")
    finally:
        await client.close()
    assert page.servers == {"vllm"}
    assert follower.advance(page) == {model.name: Counts(input=tokens, output=0, requests=2)}
