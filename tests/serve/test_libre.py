"""LibreTranslate's routes on `attn serve`: JSON and form bodies, /languages, the model by
(source, target), the refusals, the key in the body, and the unmodified libretranslatepy client
against a live server."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from serve_helpers import LiveServer, tiny_runs
from conftest import cli

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from attn_cli.serve.app import create_app  # noqa: E402
from attn_cli.serve.config import ServeConfig, parse_models  # noqa: E402
from attn_cli.serve.runner import open_models  # noqa: E402

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TEXTS = ["Ho fame.", "Dov'è la stazione?"]


@pytest.fixture(scope="module")
def runs():
    return tiny_runs()


def client_for(runs, **options):
    cfg = ServeConfig(**{"max_chars": 2000, "max_texts": 4, **options})
    engines = open_models(parse_models([f"it-en={runs / 'translate'}", f"sst={runs / 'sentiment'}"]), cfg)
    return TestClient(create_app(engines, cfg))


@pytest.fixture(scope="module")
def client(runs):
    with client_for(runs) as c:
        yield c


def v1(client, text):
    r = client.post("/v1/translate", json={"text": text})
    assert r.status_code == 200, r.text
    return [o["text"] for o in r.json()["outputs"]]


def test_translate_json_and_form_bodies_give_v1s_translations(client):
    r = client.post("/translate", json={"q": TEXTS[0], "source": "it", "target": "en"})
    assert r.status_code == 200 and r.json() == {"translatedText": v1(client, TEXTS[0])[0]}
    form = urlencode([("q", TEXTS[0]), ("q", TEXTS[1]), ("source", "it"), ("target", "en"), ("format", "text")])
    r = client.post("/translate", content=form, headers=FORM)
    assert r.status_code == 200 and r.json() == {"translatedText": v1(client, TEXTS)}
    r = client.post("/translate", json={"q": TEXTS, "source": "auto", "target": "en", "alternatives": 2})
    assert r.json() == {"translatedText": v1(client, TEXTS), "alternatives": [[], []]}
    r = client.post("/translate", json={"q": "<b>Ho fame.</b>", "source": "it", "target": "en",
                                        "format": "html"})
    assert r.status_code == 400 and "html with markup is not supported" in r.json()["error"]
    ok = client.post("/translate", json={"q": "Ho fame.", "source": "it", "target": "en", "format": "html"})
    assert ok.status_code == 200  # html without tags is plain text


def test_languages_lists_the_served_pairs(client):
    want = [{"code": "it", "name": "Italian", "targets": ["en"]}]
    assert client.get("/languages").json() == want
    assert client.request("GET", "/languages", content="", headers=FORM).json() == want  # libretranslatepy's
    assert client.post("/languages", content="", headers=FORM).json() == want
    assert client.post("/detect", content=urlencode({"q": "ciao"}), headers=FORM).status_code == 404


@pytest.mark.parametrize("body, status, fragment", [
    ({"q": "Ho fame.", "source": "de", "target": "en"}, 400, "no model translates de->en; served pairs: it->en"),
    ({"q": "Ho fame.", "target": "en"}, 400, "'source' is missing"),
    ({"source": "it", "target": "en"}, 400, "'q' is missing"),
    ({"q": 3, "source": "it", "target": "en"}, 422, "'q' must be a string or a list of strings"),
    ({"q": "x" * 2001, "source": "it", "target": "en"}, 422, "at most 2,000 are allowed"),
    ({"q": ["a"] * 5, "source": "it", "target": "en"}, 422, "at most 4 are allowed"),
    ({"q": "Ho fame.", "source": "it", "target": "en", "format": "pdf"}, 400, "'format' must be text or html"),
])
def test_refusals_are_4xx_json(client, body, status, fragment):
    r = client.post("/translate", json=body)
    assert r.status_code == status and fragment in r.json()["error"], r.text


def test_bad_bodies(client):
    r = client.post("/translate", content=b"{oops", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    r = client.post("/translate", content=b"q=x", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415 and "unsupported content type" in r.json()["error"]


def test_the_api_key_in_the_body_or_the_header(runs):
    with client_for(runs, api_key="s3cret") as c:
        body = {"q": "Ho fame.", "source": "it", "target": "en"}
        assert c.post("/translate", json=body).status_code == 403
        assert c.post("/translate", json={**body, "api_key": "wrong"}).json()["error"].startswith("Invalid API key")
        assert c.post("/translate", json={**body, "api_key": "s3cret"}).status_code == 200
        form = urlencode({**body, "api_key": "s3cret"})
        assert c.post("/translate", content=form, headers=FORM).status_code == 200
        assert c.post("/translate", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/languages").status_code == 403
        assert c.post("/v1/translate", json={"text": "Ho fame."}).status_code == 401  # /v1: the header only


def test_the_libretranslatepy_client_unmodified(runs):
    lt = pytest.importorskip("libretranslatepy", reason="pip install libretranslatepy (in the dev extra)")
    srv = LiveServer("--model", f"it-en={runs / 'translate'}")
    try:
        api = lt.LibreTranslateAPI(srv.url)
        assert api.languages() == [{"code": "it", "name": "Italian", "targets": ["en"]}]
        got = [api.translate(t, "it", "en") for t in TEXTS]
    finally:
        srv.stop()
    r = cli("translate", "-m", runs / "translate", *TEXTS)
    assert r.exit_code == 0 and got == r.stdout.splitlines()


def test_openapi_and_metrics_know_the_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/translate", "/languages"} <= set(paths)
    client.post("/translate", json={"q": "Ho fame.", "source": "it", "target": "en"})
    assert 'route="/translate"' in client.get("/metrics").text
