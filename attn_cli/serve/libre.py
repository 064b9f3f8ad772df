"""LibreTranslate-compatible routes, so that LibreTranslate's clients (browser extensions, bots,
CAT tools, the ``libretranslatepy`` package) work with ``attn serve`` unchanged:

- ``POST /translate``: ``q`` (a string or a list), ``source``, ``target``, ``format``
  (text | html), ``alternatives``, ``api_key``; as a JSON body or a form-encoded one (what
  LibreTranslate accepts). Answers ``{"translatedText": ...}`` (a string, or a list for a list),
  with ``"alternatives"`` (always empty: attn returns one translation) when asked.
- ``GET|POST /languages``: ``[{"code", "name", "targets"}]`` of the served translate models.

The model is the served translate model of the (source, target) pair; ``source: "auto"`` is
accepted when one source language is served (attn detects no languages, so there is no
``/detect``: 404). Limits, batching, metrics and logs are those of ``/v1/translate``. With
``--api-key``, the key may come as LibreTranslate sends it (``api_key`` in the body) or as the
bearer header; a wrong or missing key is a 403, as LibreTranslate answers.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from attn_cli.serve.config import ServeConfig
from attn_cli.serve.runner import ModelRunner
from attn_cli.serve.schemas import ApiError, TranslateRequest

LIBRE_ROUTES = {"/translate", "/languages"}
NAMES = {"ar": "Arabic", "cs": "Czech", "de": "German", "en": "English", "es": "Spanish", "fr": "French",
         "it": "Italian", "ja": "Japanese", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ru": "Russian",
         "tr": "Turkish", "uk": "Ukrainian", "zh": "Chinese"}
MARKUP = re.compile(r"<[a-zA-Z/!][^>]*>")
Infer = Callable[[str, TranslateRequest], Awaitable[tuple[ModelRunner, list]]]


async def read_fields(request: Request) -> dict:
    """The body's fields: a JSON object, or form-encoded (a repeated field becomes a list)."""
    raw = await request.body()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json" or (not kind and raw.lstrip().startswith(b"{")):
        try:
            fields = json.loads(raw or b"{}")
        except ValueError as e:
            raise ApiError(400, f"malformed JSON: {e}") from None
        if not isinstance(fields, dict):
            raise ApiError(400, "the request needs a JSON object body")
        return fields
    if kind in ("", "application/x-www-form-urlencoded"):
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        return {k: v[0] if len(v) == 1 else v for k, v in form.items()}
    raise ApiError(415, f"unsupported content type '{kind[:60]}'; send JSON or a form "
                   "(application/x-www-form-urlencoded)")


def pairs(runners: dict[str, ModelRunner]) -> dict[tuple[str, str], ModelRunner]:
    """(source, target) -> the translate model that serves it (the first one named)."""
    out: dict[tuple[str, str], ModelRunner] = {}
    for r in runners.values():
        langs = r.info.get("languages") or {}
        if r.task == "translate" and langs.get("src") and langs.get("tgt"):
            out.setdefault((langs["src"], langs["tgt"]), r)
    return out


def check_key(cfg: ServeConfig, request: Request, fields: dict) -> None:
    """--api-key: LibreTranslate's ``api_key`` field, or the bearer header; else 403."""
    if not cfg.api_key:
        return
    given = fields.get("api_key") if isinstance(fields.get("api_key"), str) else ""
    header = request.headers.get("authorization", "")
    ok = hmac.compare_digest(given.encode(), cfg.api_key.encode()) or hmac.compare_digest(
        header.encode(), f"Bearer {cfg.api_key}".encode())
    if not ok:
        raise ApiError(403, "Invalid API key: send it as api_key (or the header 'Authorization: Bearer KEY')")


def choose(runners: dict[str, ModelRunner], source, target) -> ModelRunner:
    """The model of the pair; 400 naming the served pairs when there is none."""
    served = pairs(runners)
    listing = ", ".join(f"{s}->{t}" for s, t in served) or "none (no translate model with languages)"
    for name, value in (("source", source), ("target", target)):
        if not isinstance(value, str) or not value:
            raise ApiError(400, f"'{name}' is missing: a language code; served pairs: {listing}")
    if source == "auto":
        sources = {s for s, t in served if t == target}
        if len(sources) != 1:
            raise ApiError(400, f"source 'auto' needs a language detector, which attn does not have; "
                           f"name the source language (served pairs: {listing})")
        source = sources.pop()
    runner = served.get((source, target))
    if runner is None:
        raise ApiError(400, f"no model translates {source[:20]}->{target[:20]}; served pairs: {listing}")
    return runner


def _texts(fields: dict) -> str | list[str]:
    q = fields.get("q")
    if q is None:
        raise ApiError(400, "'q' is missing: the text to translate (a string or a list of strings)")
    if not isinstance(q, str) and not (isinstance(q, list) and all(isinstance(x, str) for x in q)):
        raise ApiError(422, "'q' must be a string or a list of strings")
    fmt = fields.get("format", "text")
    if fmt not in ("text", "html"):
        raise ApiError(400, f"'format' must be text or html, got {str(fmt)[:20]!r}")
    if fmt == "html" and any(MARKUP.search(t) for t in ([q] if isinstance(q, str) else q)):
        raise ApiError(400, "format html with markup is not supported: attn translates plain text; "
                       "send the text without tags and format text")
    return q


def libre_routes(app: FastAPI, runners: dict[str, ModelRunner], cfg: ServeConfig, infer: Infer) -> None:
    """Register /translate and /languages (``infer`` is /v1/translate's queueing and limits)."""

    @app.post("/translate", tags=["LibreTranslate"])
    async def translate(request: Request) -> JSONResponse:
        """LibreTranslate's translate: q, source, target, format, alternatives, api_key."""
        fields = await read_fields(request)
        check_key(cfg, request, fields)
        q = _texts(fields)
        runner = choose(runners, fields.get("source"), fields.get("target"))
        try:
            alternatives = int(fields.get("alternatives") or 0)
        except (TypeError, ValueError):
            raise ApiError(422, "'alternatives' must be an integer") from None
        _, outputs = await infer("translate", TranslateRequest(text=q, model=runner.name))
        texts = [o["text"] for o in outputs]
        body: dict = {"translatedText": texts if isinstance(q, list) else texts[0]}
        if alternatives > 0:
            body["alternatives"] = [[] for _ in texts] if isinstance(q, list) else []
        return JSONResponse(body)

    @app.api_route("/languages", methods=["GET", "POST"], tags=["LibreTranslate"])
    async def languages(request: Request) -> JSONResponse:
        """LibreTranslate's languages: each served source language and its targets."""
        fields = await read_fields(request) if request.method == "POST" or await request.body() else {}
        check_key(cfg, request, fields)
        targets: dict[str, list[str]] = {}
        for s, t in pairs(runners):
            targets.setdefault(s, []).append(t)
        return JSONResponse([{"code": s, "name": NAMES.get(s, s), "targets": ts} for s, ts in targets.items()])
