"""`attn serve`: the HTTP API and the web page over one or more run directories
(the server itself is the ``serve`` package)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from attn_cli.cli import console as ui
from attn_cli.cli.app import AttnCommand, app, command, flag
from attn_cli.cli.options import ENG, DeviceOpt, EngineOpt
from attn_cli.serve.config import ServeConfig as D  # the defaults (importing it loads no torch)

LIM = "Limits and batching"
NET = "Network and security"


def _log(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@app.command("serve", cls=AttnCommand, epilog="Examples:  attn serve -m runs/it-en  ·  "
             "attn serve -m de-en=runs/m30k -m sst2=runs/sst2 --port 8080  ·  "
             "ATTN_API_KEY=secret attn serve -m runs/m30k --host 0.0.0.0  ·  "
             "curl -s localhost:8000/v1/translate -H 'Content-Type: application/json' "
             "-d '{\"text\": \"Ein Hund läuft.\"}'")
@command
def serve(
    models: Annotated[list[str], typer.Option(
        "--model", "-m", show_default=False,
        help="Run directory to serve, or NAME=RUN_DIR; repeat for several models (one process "
        "serves them all). The name, which requests use, is the directory's name unless given.")],
    host: Annotated[str, typer.Option("--host", rich_help_panel=NET, help=(
        "Address to listen on. The default, loopback, accepts connections from this machine only; "
        "0.0.0.0 accepts them from any machine that can reach it."))] = D.host,
    port: Annotated[int, typer.Option("--port", "-p", rich_help_panel=NET,
                                      help="TCP port; 0 = any free port (the URL printed says which).")] = D.port,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="ATTN_API_KEY", show_envvar=True, show_default=False, rich_help_panel=NET,
        help="Require 'Authorization: Bearer KEY' on every route but /health and the page's own "
        "files (the page asks for the key).")] = None,
    cors: Annotated[list[str] | None, typer.Option(
        "--cors", rich_help_panel=NET, show_default=False,
        help="Allow browser pages from this origin (e.g. https://example.org, or *) to call the "
        "API; repeatable. Off by default.")] = None,
    engine: EngineOpt = D.engine,
    threads: Annotated[int, typer.Option("--threads", rich_help_panel=ENG, help=(
        "Intra-op CPU threads per worker; 0 = auto: 1, with one torch worker or one ctranslate2 "
        "replica per core (measured fastest on 2 cores)."))] = D.threads,
    device: DeviceOpt = D.device,
    max_chars: Annotated[int, typer.Option("--max-chars", rich_help_panel=LIM,
                                           help="Characters per text (422 above).")] = D.max_chars,
    max_texts: Annotated[int, typer.Option("--max-texts", rich_help_panel=LIM,
                                           help="Texts per request (422 above).")] = D.max_texts,
    max_body: Annotated[int, typer.Option("--max-body", rich_help_panel=LIM,
                                          help="Bytes per request body (413 above).")] = D.max_body,
    max_batch_tokens: Annotated[int, typer.Option("--max-batch-tokens", rich_help_panel=LIM, help=(
        "Source tokens the worker gathers into one batch, across requests (and the most one "
        "text may have)."))] = D.max_batch_tokens,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", rich_help_panel=LIM, help=(
        "How long a batch waits for more requests after its first one arrived."))] = D.max_wait_ms,
    workers: Annotated[int, typer.Option("--workers", rich_help_panel=LIM, help=(
        "Batches each model runs at once, side by side; 0 = auto: torch on the CPU one per "
        "--threads cores, else 1 (ctranslate2 spreads each batch over one replica per core)."))] = D.workers,
    max_beam: Annotated[int, typer.Option("--max-beam", rich_help_panel=LIM,
                                          help="Largest beam a request may ask for.")] = D.max_beam,
    queue: Annotated[int, typer.Option("--queue", rich_help_panel=LIM, help=(
        "Requests waiting per model; more are answered 429 with Retry-After."))] = D.queue,
    timeout: Annotated[float, typer.Option("--timeout", rich_help_panel=LIM, help=(
        "Seconds a request may take, waiting included; then 504."))] = D.timeout,
    quiet: Annotated[bool, flag("--quiet", "-q", help="No log line per request.")] = False,
) -> None:
    """Serve models over HTTP: a JSON API with batching across requests, and a page showing attention."""
    from attn_cli.serve.config import ServeConfig, parse_models

    cfg = ServeConfig(host=host, port=port, api_key=api_key, cors=list(cors or []), engine=engine,
                      threads=threads, device=device, max_chars=max_chars, max_texts=max_texts,
                      max_body=max_body, max_batch_tokens=max_batch_tokens, max_wait_ms=max_wait_ms,
                      workers=workers, max_beam=max_beam, queue=queue, timeout=timeout, quiet=quiet)
    specs = parse_models(models)
    from attn_cli.serve import server

    sock = server.bind(cfg.host, cfg.port)  # before loading: a port in use fails at once
    try:
        from attn_cli.serve.app import create_app
        from attn_cli.serve.runner import open_models

        engines = open_models(specs, cfg)
        app_ = create_app(engines, cfg, log=_log)
    except BaseException:
        sock.close()
        raise
    for spec in specs:
        info = app_.state.runners[spec.name].info
        for n in engines[spec.name].notes:
            ui.note(f"{spec.name}: {n}")
        ui.err.print(f"model [bold]{spec.name}[/]: {_describe(info)}, {spec.path}", highlight=False)

    def ready(url: str) -> None:
        where = ("loopback only: other machines cannot connect" if cfg.is_loopback
                 else "reachable from other machines")
        ui.err.print(f"serving on [bold]{url}[/] ({where}); the page is at /, the API at /docs", highlight=False)
        if cfg.api_key:
            ui.note("API key required: send 'Authorization: Bearer KEY' (not needed for /health and the page)")
        elif not cfg.is_loopback:
            ui.warn("no API key: anyone who can reach this machine can use the models (--api-key)")
        ui.note("Ctrl-C or SIGTERM stops the server")

    server.run(app_, sock, ready, ui.note)
    ui.note("stopped")


def _describe(info: dict) -> str:
    what = info["task"]
    langs = info.get("languages") or {}
    if langs.get("src") and langs.get("tgt"):
        what += f" {langs['src']}\u2192{langs['tgt']}"
    if info.get("labels"):
        what += f" ({', '.join(info['labels'])})"
    params = info.get("parameters")
    size = f", {params / 1e6:.2f}M parameters" if params else ""
    return f"{what}, engine {info['engine']}{size}"
