"""`attn serve` on tiny models: every route, every refusal (and that the server keeps serving),
the API key, CORS, several models, input order, batching across concurrent requests, 429 and
504, the batcher on its own, the command's one-line errors, and a live subprocess stopped by
SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import threading
import time

import pytest
from serve_helpers import LiveServer, tiny_runs
from conftest import cli, one_line_error

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from attn_cli.errors import AttnError  # noqa: E402
from attn_cli.serve.app import create_app  # noqa: E402
from attn_cli.serve.batcher import Batcher, Closed, QueueFull  # noqa: E402
from attn_cli.serve.config import ServeConfig, parse_model_arg, parse_models  # noqa: E402
from attn_cli.serve.runner import open_models  # noqa: E402

LIMITS = dict(max_chars=2000, max_texts=4, max_body=20_000, max_batch_tokens=100)


@pytest.fixture(scope="module")
def runs():
    return tiny_runs()


def make_app(runs, names: dict[str, str], wrap=None, **options):
    cfg = ServeConfig(**options)
    engines = open_models(parse_models([f"{n}={runs / d}" for n, d in names.items()]), cfg)
    if wrap:
        engines = {n: wrap(e) for n, e in engines.items()}
    return create_app(engines, cfg)


@pytest.fixture(scope="module")
def client(runs):
    app = make_app(runs, {"it-en": "translate", "summ": "summarize", "sst": "sentiment"}, **LIMITS)
    with TestClient(app) as c:
        yield c


def post(client, route, body):
    return client.post(route, content=body if isinstance(body, bytes) else json.dumps(body),
                       headers={"Content-Type": "application/json"})


# ------------------------------------------------------------------ routes


def test_health_models_docs_page(client):
    assert client.get("/health").json() == {"status": "ok", "models": 3}
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"it-en", "summ", "sst"}
    assert models["it-en"]["task"] == "translate" and models["it-en"]["languages"] == {"src": "it", "tgt": "en"}
    assert models["sst"]["labels"] == ["negative", "positive"]
    assert "languages" not in models["summ"] and "languages" not in models["sst"]  # no {"src": null, ...}
    for m in models.values():
        assert m["engine"].startswith("torch") and m["parameters"] > 0
        assert m["best_validation"]["name"] in ("bleu", "rouge1", "accuracy")
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/translate", "/v1/summarize", "/v1/sentiment", "/v1/models", "/health", "/metrics"} <= set(paths)
    docs = client.get("/docs").text
    assert "swagger" in docs.lower() and "https://" not in docs  # works offline: no CDN
    for f in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/docs-static/{f}" in docs and client.get(f"/docs-static/{f}").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "<select" in page.text
    for f in ("app.js", "style.css", "index.html"):
        assert client.get(f"/static/{f}").status_code == 200
    assert "https://" not in page.text + client.get("/static/app.js").text + client.get("/static/style.css").text


def test_translate_one_text_and_a_list_in_input_order(client):
    texts = ["Ho fame.", "Dov'è la stazione?", "Sabato partirò per Londra."]
    singles = [post(client, "/v1/translate", {"text": t, "beam": 1}).json() for t in texts]
    assert all(s["model"] == "it-en" and len(s["outputs"]) == 1 for s in singles)
    many = post(client, "/v1/translate", {"text": texts, "beam": 1}).json()
    assert [o["text"] for o in many["outputs"]] == [s["outputs"][0]["text"] for s in singles]
    for o in many["outputs"]:
        assert isinstance(o["text"], str) and o["score"] <= 0 and "attention" not in o


def test_summarize_and_sentiment(client):
    r = post(client, "/v1/summarize", {"text": ["The team met on Monday. They chose a logo.", "Rain all week."],
                                       "max_len_b": 8, "beam": 2})
    assert r.status_code == 200 and r.json()["model"] == "summ" and len(r.json()["outputs"]) == 2
    r = post(client, "/v1/summarize", {"text": "A doc.", "sample": True, "top_p": 0.9, "seed": 3, "max_len_b": 6})
    assert r.status_code == 200, r.text
    texts = ["I loved it.", "Terrible service, never again.", "Fine."]
    out = post(client, "/v1/sentiment", {"text": texts}).json()["outputs"]
    singles = [post(client, "/v1/sentiment", {"text": t}).json()["outputs"][0] for t in texts]
    for o, s in zip(out, singles, strict=True):
        assert o["label"] in ("negative", "positive") and abs(sum(o["probabilities"].values()) - 1) < 1e-3
        assert o["confidence"] == max(o["probabilities"].values())
        assert o["probabilities"] == pytest.approx(s["probabilities"], abs=1e-4)  # input order


def test_attention_pictures(client):
    out = post(client, "/v1/translate", {"text": "Ho fame.", "attention": True, "beam": 1}).json()["outputs"][0]
    att = out["attention"]
    assert att["output_pieces"][-1] == "</s>"
    assert "".join(att["source_pieces"]).replace("\u2581", " ").strip() == "Ho fame."
    assert len(att["matrix"]) == len(att["output_pieces"])
    assert all(len(row) == len(att["source_pieces"]) and abs(sum(row) - 1) < 1e-2 for row in att["matrix"])
    out = post(client, "/v1/sentiment", {"text": "not bad at all", "attention": True}).json()["outputs"][0]
    att = out["attention"]
    assert len(att["pieces"]) == len(att["importance"]) > 0 and abs(sum(att["importance"]) - 1) < 1e-2


# ------------------------------------------------------------------ refusals

LONG = "zq " * 667  # 2,001 characters
BAD = [  # (route, body, status, fragment of the error, limit name)
    ("/v1/translate", b"{", 400, "malformed JSON", None),
    ("/v1/translate", b'{"text": "caf\xe9"}', 400, "not valid UTF-8", None),
    ("/v1/translate", b"", 422, "no JSON body", None),
    ("/v1/translate", b"[1, 2]", 422, "JSON object", None),
    ("/v1/translate", {"text": 5}, 422, "'text' must be a string or a list", None),
    ("/v1/translate", {"text": ["ok", 5]}, 422, "'text' must be a string or a list", None),
    ("/v1/translate", {}, 422, "'text' is missing", None),
    ("/v1/translate", {"text": ""}, 422, "is empty", None),
    ("/v1/translate", {"text": "   "}, 422, "is empty", None),
    ("/v1/translate", {"text": []}, 422, "empty list", None),
    ("/v1/translate", {"text": ["fine", ""]}, 422, "text 1 is empty", None),
    ("/v1/translate", {"text": "a\u0000b"}, 422, "NUL", None),
    ("/v1/translate", b'{"text": "\\ud800"}', 422, "lone surrogate", None),
    ("/v1/translate", {"text": "x", "beam": "5"}, 422, "'beam'", None),
    ("/v1/translate", {"text": "x", "beam": 0}, 422, "'beam'", None),
    ("/v1/translate", {"text": "x", "attention": "yes"}, 422, "'attention'", None),
    ("/v1/translate", b'{"text": "x", "max_len_a": NaN}', 422, "finite", None),
    ("/v1/translate", {"text": "x", "bogus": 1}, 422, "unknown field 'bogus'", None),
    ("/v1/translate", {"text": "x", "path": "/etc/passwd"}, 422, "unknown field 'path'", None),
    ("/v1/translate", {"text": "x", "beam": 50}, 422, "over the server's limit", "--max-beam"),
    ("/v1/summarize", {"text": "x", "sample": True, "beam": 3}, 422, "bad decoding option", None),
    ("/v1/translate", {"text": LONG}, 422, "2,001 characters", "--max-chars"),
    ("/v1/translate", {"text": ["a"] * 5}, 422, "5 texts", "--max-texts"),
    ("/v1/translate", {"text": "wz " * 600, "split_sentences": False}, 422, "the model takes at most 256",
     "model max_tokens"),
    ("/v1/translate", {"text": "wz " * 60, "split_sentences": False}, 422, "a batch holds at most 100",
     "--max-batch-tokens"),
    ("/v1/translate", b'{"text": "' + b"a" * 25_000 + b'"}', 413, "at most 20,000", "--max-body"),
    ("/v1/translate", {"text": "x", "model": "nope"}, 404, "no model named 'nope'", None),
    ("/v1/translate", {"text": "x", "model": "sst"}, 404, "is a sentiment model", None),
    ("/v1/sentiment", {"text": "x", "beam": 2}, 422, "unknown field 'beam'", None),
]


@pytest.mark.parametrize("route,body,status,fragment,limit", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_json_4xx(client, route, body, status, fragment, limit):
    r = post(client, route, body)
    assert r.status_code == status, r.text
    err = r.json()
    assert fragment in err["error"], err
    assert (err.get("limit") or {}).get("name") == limit
    if limit:
        assert isinstance(err["limit"]["value"], int | float)


def test_unknown_routes_methods_and_streamed_bodies(client):
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and "no route GET /v2/nothing" in r.json()["error"]
    r = client.get("/v1/translate")
    assert r.status_code == 405 and "not allowed" in r.json()["error"]
    big = client.post("/v1/translate", content=(b"x" * 1000 for _ in range(30)))  # chunked, no length
    assert big.status_code == 413 and big.json()["limit"]["name"] == "--max-body"
    r = client.post("/v1/translate", content=b'{"text": "Ho fame."}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 422
    assert post(client, "/v1/translate", {"text": "Ho fame.", "beam": 1}).status_code == 200  # still serving


def test_metrics(client):
    post(client, "/v1/translate", {"text": "Ho fame.", "beam": 1})
    post(client, "/v1/translate", {"text": ""})
    text = client.get("/metrics").text
    assert re.search(r'attn_requests_total\{route="/v1/translate",status="200"\} [1-9]', text)
    assert re.search(r'attn_requests_total\{route="/v1/translate",status="422"\} [1-9]', text)
    for name in ("attn_request_seconds_bucket", "attn_batch_texts_bucket", "attn_batch_requests_count",
                 'attn_queue_depth{model="it-en"}', 'attn_tokens_total{model="it-en",side="source"}',
                 'attn_tokens_total{model="it-en",side="output"}', 'attn_tokens_per_second{model="it-en"}'):
        assert name in text, name
    assert 'route="/v2/nothing"' not in text  # unknown paths share the label "other"


# ------------------------------------------------------------------ key, CORS, several models


def test_api_key(runs, monkeypatch):
    app = make_app(runs, {"it-en": "translate"}, api_key="s3cret")
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
        assert c.get("/docs-static/swagger-ui.css").status_code == 200  # static files need no key
        for path in ("/v1/models", "/metrics", "/docs", "/openapi.json"):
            r = c.get(path)
            assert r.status_code == 401 and "Bearer" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
        body = {"text": "Ho fame.", "beam": 1}
        assert c.post("/v1/translate", json=body).status_code == 401
        assert c.post("/v1/translate", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/v1/translate", json=body, headers={"Authorization": "s3cret"}).status_code == 401
        ok = c.post("/v1/translate", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["model"] == "it-en"
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_cors_off_unless_asked(runs, client):
    pre = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    r = client.get("/health", headers={"Origin": "https://example.org"})
    assert "access-control-allow-origin" not in r.headers
    app = make_app(runs, {"it-en": "translate"}, cors=["https://example.org"], api_key="k")
    with TestClient(app) as c:
        r = c.options("/v1/translate", headers={**pre, "Access-Control-Request-Headers": "authorization"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://example.org"
        r = c.options("/v1/translate", headers={**pre, "Origin": "https://evil.example"})
        assert r.headers.get("access-control-allow-origin") != "https://evil.example"


def test_several_models_are_routed_by_name(runs):
    app = make_app(runs, {"a": "translate", "b": "translate", "sst": "sentiment"})
    with TestClient(app) as c:
        r = c.post("/v1/translate", json={"text": "Ciao."})
        assert r.status_code == 422 and "name one" in r.json()["error"] and "a, b" in r.json()["error"]
        for name in ("a", "b"):
            r = c.post("/v1/translate", json={"text": "Ciao.", "model": name, "beam": 1})
            assert r.status_code == 200 and r.json()["model"] == name
        assert c.post("/v1/sentiment", json={"text": "Ciao."}).json()["model"] == "sst"  # the only one
        r = c.post("/v1/summarize", json={"text": "Ciao."})
        assert r.status_code == 404 and "no summarize model" in r.json()["error"]


# ------------------------------------------------------------------ batching, queue, timeout


class Gated:
    """An engine whose generate waits for ``gate``: holds the worker busy while requests queue."""

    def __init__(self, engine) -> None:
        self._engine, self.gate, self.entered = engine, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def generate(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(30)
        return self._engine.generate(*args, **kwargs)


def gated_app(runs, **options):
    options.setdefault("workers", 1)  # one batch at a time: what these tests hold up and count
    engines = {}

    def wrap(e):
        engines["it-en"] = Gated(e)
        return engines["it-en"]

    app = make_app(runs, {"it-en": "translate"}, wrap=wrap, **options)
    return app, engines["it-en"], app.state.runners["it-en"]


async def _settle(runner, depth: int) -> None:
    for _ in range(500):
        if runner.batcher.depth >= depth:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"queue depth stayed {runner.batcher.depth}")


def test_batching_across_concurrent_requests_keeps_each_requests_order(runs):
    app, engine, runner = gated_app(runs)
    texts = [["Ho fame."], ["Ciao.", "Grazie mille."], ["Dov'è la stazione?"], ["Buongiorno.", "Sì.", "No."],
             ["Sabato partirò per Londra."], ["Che ore sono?"]]

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            first = asyncio.create_task(c.post("/v1/translate", json={"text": "Prima.", "beam": 1}))
            await asyncio.to_thread(engine.entered.wait, 10)  # the worker holds the first request
            rest = [asyncio.create_task(c.post("/v1/translate", json={"text": t, "beam": 1})) for t in texts]
            await _settle(runner, len(texts))
            engine.gate.set()
            answers = await asyncio.gather(first, *rest)
            alone = [await c.post("/v1/translate", json={"text": t, "beam": 1}) for t in texts]
            metrics = (await c.get("/metrics")).text
        return answers, alone, metrics

    answers, alone, metrics = asyncio.run(main())
    assert all(a.status_code == 200 for a in answers)
    for got, ref in zip(answers[1:], alone, strict=True):
        assert [o["text"] for o in got.json()["outputs"]] == [o["text"] for o in ref.json()["outputs"]]
    # batch 1: the first request; batch 2: all six that queued meanwhile (9 texts); then 6 alone
    count = float(re.search(r'attn_batch_requests_count\{model="it-en"\} (\S+)', metrics).group(1))
    one = float(re.search(r'attn_batch_requests_bucket\{le="1.0",model="it-en"\} (\S+)', metrics).group(1))
    assert count == 8 and one == 7
    assert re.search(r'attn_batch_texts_bucket\{le="8.0",model="it-en"\} 7.0', metrics)
    app.state.close()


def test_full_queue_is_429_and_slow_requests_504(runs):
    app, engine, runner = gated_app(runs, queue=1, timeout=1.0)

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            body = {"text": "Ho fame.", "beam": 1}
            held = asyncio.create_task(c.post("/v1/translate", json=body))
            await asyncio.to_thread(engine.entered.wait, 10)
            waiting = asyncio.create_task(c.post("/v1/translate", json=body))
            await _settle(runner, 1)
            full = await c.post("/v1/translate", json=body)
            slow = await held  # still held by the gate after 1 s
            waited = await waiting
            engine.gate.set()
            await asyncio.sleep(0.2)
            after = await c.post("/v1/translate", json=body)
        return full, slow, waited, after

    full, slow, waited, after = asyncio.run(main())
    assert full.status_code == 429 and full.json()["limit"] == {"name": "--queue", "value": 1}
    assert int(full.headers["retry-after"]) >= 1
    assert slow.status_code == 504 and slow.json()["limit"]["name"] == "--timeout"
    assert waited.status_code == 504
    assert after.status_code == 200  # the server kept serving
    app.state.close()


def test_batcher_budget_keys_cancel_and_close():
    seen: list[list[str]] = []
    gate = threading.Event()

    def run(jobs):
        gate.wait(10)
        seen.append([j.payload for j in jobs])
        return [[f"{j.payload}:{len(x)}" for x in j.ids] for j in jobs]

    b = Batcher("m", run, max_tokens=10, max_wait=0.05, max_queue=5)
    b.start()
    first = b.submit([[1]], "k", "first")  # taken alone; run waits on the gate
    time.sleep(0.1)
    futures = [b.submit([[1, 2, 3]], key, name) for key, name in
               (("k", "a"), ("other", "b"), ("k", "c"), ("k", "d"), ("k", "e"))]
    with pytest.raises(QueueFull):
        b.submit([[1]], "k", "too many")
    assert futures[4].cancel()  # a request that timed out while waiting is skipped
    gate.set()
    assert first.result(5) == ["first:1"] and futures[0].result(5) == ["a:3"]
    assert [f.result(5) for f in futures[1:4]] == [["b:3"], ["c:3"], ["d:3"]]
    # a, c, d share a key and fit 10 tokens (9); b has other options and waits for its own batch
    assert seen == [["first"], ["a", "c", "d"], ["b"]]
    b.close()
    with pytest.raises(Closed):
        b.submit([[1]], "k", "late")


def test_batcher_failure_reaches_every_request_and_the_worker_goes_on():
    calls = []

    def run(jobs):
        calls.append(len(jobs))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [None for _ in jobs]

    b = Batcher("m", run, max_tokens=100, max_wait=0.0, max_queue=5)
    b.start()
    with pytest.raises(RuntimeError, match="boom"):
        b.submit([[1]], "k").result(5)
    assert b.submit([[1]], "k").result(5) is None
    b.close()


def test_two_workers_run_batches_side_by_side_without_splitting_them():
    both_running = threading.Barrier(2, timeout=10)  # broken unless two batches run at once
    seen: list[list[str]] = []

    def run(jobs):
        seen.append([j.payload for j in jobs])
        if len(seen) <= 2:
            both_running.wait()
        return [j.payload for j in jobs]

    b = Batcher("m", run, max_tokens=100, max_wait=0.2, max_queue=10, workers=2)
    b.start()
    first = b.submit([[1]], "k", "a")
    for _ in range(200):  # the first worker has taken "a" (after its 0.2 s wait) and runs it
        if seen:
            break
        time.sleep(0.01)
    rest = [b.submit([[1]], "k", name) for name in "bcd"]  # the other worker gathers all three
    assert [f.result(15) for f in (first, *rest)] == ["a", "b", "c", "d"]
    assert seen == [["a"], ["b", "c", "d"]]
    assert b.retry_after() == 1
    b.close()


def test_workers_and_threads_per_worker(monkeypatch):
    from types import SimpleNamespace

    from attn_cli.infer.ct2 import ct2_threads
    from attn_cli.serve.runner import auto_workers, server_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    cpu, gpu = SimpleNamespace(name="torch", on_cpu=True), SimpleNamespace(name="torch", on_cpu=False)
    ct2 = SimpleNamespace(name="ctranslate2", on_cpu=True)
    assert server_threads(ServeConfig()) == 1 and server_threads(ServeConfig(threads=2)) == 2
    assert auto_workers(cpu, ServeConfig()) == 8 and auto_workers(cpu, ServeConfig(threads=2)) == 4
    assert auto_workers(gpu, ServeConfig()) == 1 and auto_workers(gpu, ServeConfig(workers=3)) == 3
    assert auto_workers(ct2, ServeConfig()) == 1 and auto_workers(ct2, ServeConfig(workers=2)) == 2
    assert ct2_threads(0, "cpu") == (1, 8) and ct2_threads(3, "cpu") == (3, 2) and ct2_threads(0, "cuda") == (1, 1)
    with pytest.raises(AttnError, match="--workers must be >= 0"):
        ServeConfig(workers=-1)


# ------------------------------------------------------------------ the command


def test_model_arguments():
    assert parse_model_arg("de-en=runs/m30k").name == "de-en"
    assert parse_model_arg("runs/m30k").name == "m30k"
    with pytest.raises(Exception, match="bad model name"):
        parse_model_arg("bad name!=runs/x")


def test_command_errors_are_one_line(runs, tmp_path):
    one_line_error(cli("serve", "-m", tmp_path / "nope", "--port", "0"), "does not exist")
    one_line_error(cli("serve", "-m", "a b=" + str(runs / "translate"), "--port", "0"), "bad model name")
    one_line_error(cli("serve", "-m", f"x={runs / 'translate'}", "-m", f"x={runs / 'sentiment'}"),
                   "two models are named 'x'")
    one_line_error(cli("serve", "-m", runs / "translate", "--max-texts", "0"), "--max-texts must be positive")
    one_line_error(cli("serve", "-m", runs / "translate", "--engine", "fast"), "unknown --engine")
    one_line_error(cli("serve", "-m", runs / "translate", "--cors", "example.org"), "bad --cors origin")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        one_line_error(cli("serve", "-m", runs / "translate", "--port", port), "already in use")


@pytest.mark.slow
def test_live_server_answers_and_stops_on_sigterm(runs):
    server = LiveServer("-m", str(runs / "translate"), "-m", f"sst={runs / 'sentiment'}")
    try:
        assert "loopback only" in server.log and "model translate: translate it→en" in server.log
        assert "model sst: sentiment" in server.log
        status, body = server.call("/v1/translate", {"text": ["Ho fame.", "Ciao."], "beam": 1})
        assert status == 200 and len(body["outputs"]) == 2
        assert server.call("/health") == (200, {"status": "ok", "models": 2})
        assert server.call("/v1/sentiment", {"text": ""})[0] == 422
        # a request in flight when SIGTERM arrives still gets its answer
        slow: dict = {}
        req = {"text": ["Ho fame e sete, andiamo a mangiare qualcosa."] * 4, "beam": 8, "min_len": 200,
               "max_len_b": 250}
        t = threading.Thread(target=lambda: slow.update(r=server.call("/v1/translate", req)))
        t.start()
        time.sleep(0.3)
        start = time.monotonic()
        code = server.stop(signal.SIGTERM)
        t.join(10)
    finally:
        server.stop(signal.SIGKILL)
    assert code == 0, server.log
    assert time.monotonic() - start < 10
    assert slow["r"][0] == 200, slow
    assert re.search(r"POST /v1/translate 200 [\d.]+ ms", server.log)
    assert "Traceback" not in server.log
