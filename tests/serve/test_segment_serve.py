"""Sentence splitting on `attn serve`: /v1/translate and LibreTranslate's /translate keep a
text's paragraphs (an echo engine shows the layout exactly; the tiny model shows the shape),
split_sentences false feeds each text whole, a long sentence goes in windows with a note, the
attention of a split text is block-diagonal, summarize cuts a long document with a note, and
the page sends the text as typed and shows line breaks."""

from __future__ import annotations

import json

import pytest
from segment_helpers import PARAGRAPHS, Echo
from serve_helpers import tiny_runs

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from attn_cli.serve.app import STATIC, create_app  # noqa: E402
from attn_cli.serve.config import ServeConfig, parse_models  # noqa: E402
from attn_cli.serve.runner import open_models  # noqa: E402

LIMITS = dict(max_chars=5000, max_texts=4, max_batch_tokens=100)


def client_for(wrap=None, **options):
    runs = tiny_runs()
    cfg = ServeConfig(**{**LIMITS, **options})
    engines = open_models(parse_models([f"it-en={runs / 'translate'}", f"summ={runs / 'summarize'}"]), cfg)
    if wrap:
        engines = {n: wrap(e) if e.task == "translate" else e for n, e in engines.items()}
    return TestClient(create_app(engines, cfg))


@pytest.fixture(scope="module")
def echo():
    with client_for(Echo) as c:
        yield c


@pytest.fixture(scope="module")
def real():
    with client_for() as c:
        yield c


def post(client, route, body):
    return client.post(route, content=json.dumps(body), headers={"Content-Type": "application/json"})


def test_v1_translate_keeps_three_paragraphs(echo, real):
    r = post(echo, "/v1/translate", {"text": [PARAGRAPHS, "  Ciao.\r\n\r\n Grazie. \n"]})
    assert r.status_code == 200, r.text
    assert [o["text"] for o in r.json()["outputs"]] == [PARAGRAPHS, "  Ciao.\r\n\r\n Grazie. \n"]
    assert all("notes" not in o for o in r.json()["outputs"])
    out = post(real, "/v1/translate", {"text": PARAGRAPHS, "beam": 1}).json()["outputs"][0]
    assert out["text"].count("\n\n") == 2 and out["text"].count("\n") == 4  # the model's words, our layout


def test_libretranslate_keeps_three_paragraphs(echo, real):
    r = post(echo, "/translate", {"q": [PARAGRAPHS, "Ciao."], "source": "it", "target": "en"})
    assert r.status_code == 200, r.text
    assert r.json()["translatedText"] == [PARAGRAPHS, "Ciao."]
    form = real.post("/translate", data={"q": PARAGRAPHS, "source": "it", "target": "en"})
    assert form.status_code == 200 and form.json()["translatedText"].count("\n\n") == 2


def test_split_sentences_false_feeds_the_whole_text(echo):
    r = post(echo, "/v1/translate", {"text": PARAGRAPHS, "split_sentences": False})
    assert r.status_code == 200 and r.json()["outputs"][0]["text"] == PARAGRAPHS.replace("\n\n", " ")
    bad = post(echo, "/v1/translate", {"text": PARAGRAPHS, "split_sentences": "no"})
    assert bad.status_code == 422 and "split_sentences" in bad.json()["error"]
    assert post(echo, "/v1/summarize", {"text": "x", "split_sentences": True}).status_code == 422  # translate only


def test_a_long_sentence_goes_in_windows_with_a_note(echo, real):
    text = "wz " * 600 + "fine"  # over the model's 256 positions and the batch budget of 100
    out = post(echo, "/v1/translate", {"text": text}).json()["outputs"][0]
    assert out["text"].split() == text.split()
    assert len(out["notes"]) == 1 and "windows of at most 100 tokens" in out["notes"][0]
    r = post(real, "/v1/translate", {"text": text, "beam": 1, "max_len_a": 0, "max_len_b": 2})
    assert r.status_code == 200 and "windows" in r.json()["outputs"][0]["notes"][0]
    whole = post(real, "/v1/translate", {"text": text, "split_sentences": False})
    assert whole.status_code == 422 and "the model takes at most 256" in whole.json()["error"]


def test_other_scripts_translate_without_error(real):
    r = post(real, "/v1/translate", {"text": ["Привет. Как дела?", "你好。我很好！"], "beam": 1})
    assert r.status_code == 200 and len(r.json()["outputs"]) == 2


def test_split_attention_is_block_diagonal(real):
    body = {"beam": 1, "min_len": 1, "attention": True}
    one = post(real, "/v1/translate", {"text": "Ho fame.", **body}).json()["outputs"][0]["attention"]
    two = post(real, "/v1/translate", {"text": "Ho fame. Grazie.", **body}).json()["outputs"][0]["attention"]
    s1, t1 = len(one["source_pieces"]), len(one["output_pieces"])
    m = two["matrix"]
    assert len(m) == len(two["output_pieces"]) > t1 and all(len(row) == len(two["source_pieces"]) for row in m)
    assert [row[:s1] for row in m[:t1]] == one["matrix"]
    assert all(v == 0 for row in m[:t1] for v in row[s1:]) and all(v == 0 for row in m[t1:] for v in row[:s1])


def test_summarize_cuts_a_long_document_with_a_note(real):
    body = {"text": ["parola " * 600, "Una frase breve."], "beam": 1, "max_len_b": 4}
    with client_for(max_batch_tokens=1000) as big:
        r = post(big, "/v1/summarize", body)
    assert r.status_code == 200, r.text
    long, short = r.json()["outputs"]
    assert "cut to their first 256 tokens" in long["notes"][0] and "notes" not in short
    over = post(real, "/v1/summarize", body)  # cut to 256 tokens, still over a batch of 100: refused as before
    assert over.status_code == 422 and "a batch holds at most 100" in over.json()["error"]


def test_the_page_sends_the_text_as_typed_and_shows_line_breaks():
    """The page's side of the paragraphs (its browser test runs it for real): the textarea's value
    goes to /v1/<task> unchanged, and the output box keeps line breaks (pre-wrap)."""
    js = (STATIC / "app.js").read_text(encoding="utf-8")
    assert 'const text = $("text").value;' in js and "{ text, model: m.name, attention: true }" in js
    assert 'el("span", "text", out.text)' in js
    css = (STATIC / "style.css").read_text(encoding="utf-8")
    output_rule = next(line for line in css.splitlines() if line.startswith(".output {"))
    assert "white-space: pre-wrap" in output_rule
