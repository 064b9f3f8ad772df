"""The server's options (one place for every default) and the models it serves.

``ServeConfig`` holds what ``attn serve`` takes on its command line; ``parse_model_arg`` turns
one ``--model RUN_DIR`` or ``--model NAME=RUN_DIR`` into a ``ModelSpec``. Nothing here loads a
model or imports an HTTP library.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from attn_cli.errors import AttnError
from attn_cli.infer.engine import ENGINES

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TASKS = ("translate", "summarize", "sentiment")


@dataclass
class ServeConfig:
    """How ``attn serve`` listens, limits and batches (the CLI's options, with its defaults)."""

    host: str = "127.0.0.1"  # address to bind; loopback by default (other machines cannot connect)
    port: int = 8000  # TCP port; 0 = any free port (the URL printed at start says which)
    api_key: str | None = None  # when set, every route but /health and the page needs Bearer KEY
    cors: list[str] = field(default_factory=list)  # origins allowed by CORS; empty = CORS off
    engine: str = "auto"  # auto | torch | ctranslate2 (engines.open_engine)
    threads: int = 0  # intra-op threads per worker; 0 = auto (runner.server_threads: 1)
    device: str = "auto"  # auto | cpu | cuda
    max_chars: int = 5000  # characters per text
    max_texts: int = 64  # texts per request
    max_body: int = 1_048_576  # bytes per request body
    max_batch_tokens: int = 6000  # source tokens the worker gathers into one batch (and per text)
    max_wait_ms: float = 5.0  # how long a batch waits for more requests after its first arrived
    workers: int = 0  # batches a model runs at once; 0 = auto (runner.auto_workers)
    max_beam: int = 8  # largest beam a request may ask for
    queue: int = 256  # requests waiting per model before 429
    timeout: float = 30.0  # seconds a request may take before 504
    quiet: bool = False  # no per-request log line

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_texts", "max_body", "max_batch_tokens", "max_beam", "queue"):
            if getattr(self, name) <= 0:
                raise AttnError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}",
                                "see attn serve --help")
        if self.workers < 0:
            raise AttnError(f"--workers must be >= 0, got {self.workers}", "e.g. --workers 2, or 0 for auto")
        if self.max_wait_ms < 0:
            raise AttnError(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}", "e.g. --max-wait-ms 5")
        if not self.timeout > 0:
            raise AttnError(f"--timeout must be positive, got {self.timeout}", "e.g. --timeout 30")
        if not 0 <= self.port <= 65535:
            raise AttnError(f"--port must be in 0..65535, got {self.port}", "e.g. --port 8000")
        if self.engine not in ENGINES:
            raise AttnError(f"unknown --engine '{self.engine}'", f"use one of {', '.join(ENGINES)}")
        if self.api_key is not None and not self.api_key.strip():
            raise AttnError("the API key is empty", "pass a non-empty --api-key or ATTN_API_KEY")
        for origin in self.cors:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise AttnError(f"bad --cors origin '{origin}'", "use e.g. --cors https://example.org, or *")

    @property
    def is_loopback(self) -> bool:
        """True when only this machine can connect (127.0.0.0/8, ::1, localhost)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass
class ModelSpec:
    """One --model: the name requests use for it and its run directory."""

    name: str
    path: Path


def parse_model_arg(arg: str) -> ModelSpec:
    """``RUN_DIR`` (named after the directory) or ``NAME=RUN_DIR``.

    An argument that is an existing path is a path even if it holds "=".
    """
    if "=" in arg and not Path(arg).exists():
        name, _, path = arg.partition("=")
        if not NAME_RE.match(name):
            raise AttnError(f"bad model name '{name}' in --model {arg}",
                            "names are letters, digits, '.', '_' and '-', e.g. --model de-en=runs/m30k")
        if not path:
            raise AttnError(f"--model {arg} names no directory", "use NAME=RUN_DIR")
        return ModelSpec(name, Path(path))
    path = Path(arg)
    name = path.resolve().name
    if not NAME_RE.match(name):
        raise AttnError(f"cannot name the model from its directory '{name}'",
                        f"give it a name: --model NAME={arg}")
    return ModelSpec(name, path)


def parse_models(args: list[str]) -> list[ModelSpec]:
    """Every --model, with names checked to be unique."""
    if not args:
        raise AttnError("no model to serve", "pass --model RUN_DIR (or NAME=RUN_DIR), once per model")
    specs = [parse_model_arg(a) for a in args]
    seen: dict[str, Path] = {}
    for s in specs:
        if s.name in seen:
            raise AttnError(f"two models are named '{s.name}' ({seen[s.name]} and {s.path})",
                            "name them: --model NAME=RUN_DIR")
        seen[s.name] = s.path
    return specs
