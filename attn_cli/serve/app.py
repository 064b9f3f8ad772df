"""The FastAPI app: routes, error answers, and the page.

``create_app(models, cfg)`` takes the engines by name (``runner.open_models``) and returns an
ASGI app whose workers are already running; they stop at the app's shutdown (or ``app.state.close()``).

Routes: ``POST /v1/translate``, ``/v1/summarize``, ``/v1/sentiment``; LibreTranslate's ``POST
/translate`` and ``GET /languages`` (``attn_cli.serve.libre``); ``GET /v1/models``,
``/health``, ``/metrics``, ``/docs`` (OpenAPI, Swagger UI from the fastapi-offline package's
files under ``/docs-static``, so it works without internet), and the page at ``/`` with its
files under ``/static``. Every refusal is JSON ``{"error": ...}`` (plus ``"limit"`` when a limit was broken)
with a 4xx status: 400 malformed JSON or body, 401 key (403 on the LibreTranslate routes), 404
unknown route or model, 405 method, 415 a LibreTranslate body neither JSON nor a form,
413 body size, 422 types, values and limits, 429 queue full (with Retry-After), 503 shutting
down, 504 over --timeout. A 500 means a bug, never bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from attn_cli import __version__
from attn_cli.serve.batcher import Closed, QueueFull
from attn_cli.serve.config import ServeConfig
from attn_cli.serve.libre import LIBRE_ROUTES, libre_routes
from attn_cli.serve.middleware import ApiKey, Body, Observe
from attn_cli.serve.runner import ModelRunner, Payload
from attn_cli.serve.schemas import (
    ApiError,
    ErrorBody,
    SentimentRequest,
    SentimentResponse,
    Seq2SeqResponse,
    SummarizeRequest,
    TranslateRequest,
    check_texts,
    decode_config,
)
from attn_cli.serve.telemetry import CONTENT_TYPE, ServeMetrics

if TYPE_CHECKING:
    from attn_cli.infer.engine import Engine

STATIC = Path(__file__).parent / "static"
DOCS_STATIC = "/docs-static"  # Swagger UI's script, style and icon
ROUTES = {"/", "/health", "/metrics", "/docs", "/openapi.json", "/v1/models", "/v1/translate",
          "/v1/summarize", "/v1/sentiment"} | LIBRE_ROUTES
ERRORS = {s: {"model": ErrorBody} for s in (400, 401, 404, 413, 422, 429, 503, 504)}


def create_app(models: dict[str, Engine], cfg: ServeConfig,
               log: Callable[[str], None] | None = None) -> FastAPI:
    """The server for ``models`` (name -> engine) under ``cfg``; ``log`` gets one line per
    request unless ``cfg.quiet``."""
    metrics = ServeMetrics(ROUTES | {"/static", DOCS_STATIC})
    runners = {name: ModelRunner(name, eng, cfg, metrics) for name, eng in models.items()}
    for r in runners.values():
        r.batcher.start()

    def close() -> None:
        for r in runners.values():
            r.batcher.close(timeout=5.0)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await asyncio.get_running_loop().run_in_executor(None, close)

    app = FastAPIOffline(title="attn serve", version=__version__, lifespan=lifespan, redoc_url=None,
                         static_url=DOCS_STATIC,
                         description="Translation, summarization and sentiment with attn models, batched "
                         "across requests. The page at / shows the attention.")
    app.state.runners, app.state.metrics, app.state.close, app.state.cfg = runners, metrics, close, cfg
    _errors(app)
    _inference_routes(app, runners, cfg)
    libre_routes(app, runners, cfg, lambda task, req: _run(runners, cfg, task, req))
    _service_routes(app, runners, metrics)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Middleware: the last added runs first (outermost): observe, CORS, key, body.
    app.add_middleware(Body, max_body=cfg.max_body)
    if cfg.api_key:
        app.add_middleware(ApiKey, key=cfg.api_key, exempt={"/", "/health", "/favicon.ico"} | LIBRE_ROUTES,
                           exempt_prefixes=("/static/", f"{DOCS_STATIC}/"))
    if cfg.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Observe, metrics=metrics, log=None if cfg.quiet else log)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_req: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_req: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            why = (first.get("ctx") or {}).get("error", "JSON decode error")
            return JSONResponse({"error": f"malformed JSON: {why} at character {first['loc'][-1]}"}, 400)
        return JSONResponse({"error": _validation_message(first)}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(req: Request, e: HTTPException) -> JSONResponse:
        if e.status_code == 404:
            message = f"no route {req.method} {req.url.path[:200]}; see /docs"
        elif e.status_code == 405:
            message = f"{req.method} is not allowed on {req.url.path[:200]}"
        else:
            message = str(e.detail)
        return JSONResponse({"error": message}, e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def bug(_req: Request, e: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, 500)


def _validation_message(err: dict) -> str:
    """One line from pydantic's first complaint, naming the field."""
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    kind = err.get("type", "")
    if not loc:
        return "the request needs a JSON object body" if kind != "missing" else "the request has no JSON body"
    field = loc[0]
    if field == "text" and kind not in ("missing",):
        return "'text' must be a string or a list of strings"
    if kind == "missing":
        return f"'{field}' is missing"
    if kind == "extra_forbidden":
        return f"unknown field '{field}'; see /docs for the fields of this route"
    return f"'{'.'.join(loc)}': {err.get('msg', 'invalid value')}"


def _pick(runners: dict[str, ModelRunner], task: str, name: str | None) -> ModelRunner:
    """The model a request of ``task`` goes to: the one it names, else the only one of the task."""
    if name is not None:
        r = runners.get(name)
        if r is None:
            raise ApiError(404, f"no model named '{name[:100]}'; GET /v1/models lists them")
        if r.task != task:
            raise ApiError(404, f"model '{name}' is a {r.task} model; send it to /v1/{r.task}")
        return r
    of_task = [r for r in runners.values() if r.task == task]
    if not of_task:
        raise ApiError(404, f"no {task} model is served; GET /v1/models lists them")
    if len(of_task) > 1:
        raise ApiError(422, f"{len(of_task)} {task} models are served; name one with \"model\" "
                       f"({', '.join(r.name for r in of_task)})")
    return of_task[0]


async def _infer(runners: dict[str, ModelRunner], cfg: ServeConfig, task: str, req) -> JSONResponse:
    """One /v1 inference request: ``{"model", "outputs"}``."""
    runner, outputs = await _run(runners, cfg, task, req)
    return JSONResponse({"model": runner.name, "outputs": outputs})


async def _run(runners: dict[str, ModelRunner], cfg: ServeConfig, task: str, req) -> tuple[ModelRunner, list]:
    """One inference request: checked, queued on its model's batcher, answered within --timeout."""
    runner = _pick(runners, task, req.model)
    texts = check_texts(req.text, cfg)
    dcfg = decode_config(task, req, cfg) if task != "sentiment" else None
    plan = runner.plan(texts, getattr(req, "split_sentences", False)) if task != "sentiment" else None
    ids = runner.encode(texts) if plan is None else plan.ids
    try:
        future = runner.submit(ids, Payload(dcfg, req.attention))
    except QueueFull:
        raise ApiError(429, f"model '{runner.name}' has {cfg.queue} requests waiting; try again later",
                       ("--queue", cfg.queue), {"Retry-After": str(runner.batcher.retry_after())}) from None
    except Closed:
        raise ApiError(503, "the server is shutting down") from None
    try:
        outputs = await asyncio.wait_for(asyncio.wrap_future(future), cfg.timeout)
    except asyncio.TimeoutError:
        future.cancel()
        raise ApiError(504, f"the request took over {cfg.timeout:g} s", ("--timeout", cfg.timeout)) from None
    except Closed:
        raise ApiError(503, "the server is shutting down") from None
    return runner, outputs if plan is None else runner.assemble(plan, outputs)


def _inference_routes(app: FastAPI, runners: dict[str, ModelRunner], cfg: ServeConfig) -> None:
    @app.post("/v1/translate", response_model=Seq2SeqResponse, responses=ERRORS, tags=["inference"])
    async def translate(req: TranslateRequest):
        """Translate one text or a list of texts (outputs in input order)."""
        return await _infer(runners, cfg, "translate", req)

    @app.post("/v1/summarize", response_model=Seq2SeqResponse, responses=ERRORS, tags=["inference"])
    async def summarize(req: SummarizeRequest):
        """Summarize one document or a list of documents."""
        return await _infer(runners, cfg, "summarize", req)

    @app.post("/v1/sentiment", response_model=SentimentResponse, responses=ERRORS, tags=["inference"])
    async def sentiment(req: SentimentRequest):
        """Classify the sentiment of one text or a list of texts."""
        return await _infer(runners, cfg, "sentiment", req)


def _service_routes(app: FastAPI, runners: dict[str, ModelRunner], metrics: ServeMetrics) -> None:
    @app.get("/v1/models", tags=["service"])
    async def models() -> dict:
        """The served models: name, task, languages or labels, parameters, best validation, engine."""
        return {"models": [r.info for r in runners.values()]}

    @app.get("/health", tags=["service"])
    async def health() -> dict:
        """Liveness (no API key needed)."""
        return {"status": "ok", "models": len(runners)}

    @app.get("/metrics", tags=["service"])
    async def prometheus() -> Response:
        """Prometheus metrics in the text exposition format."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")
