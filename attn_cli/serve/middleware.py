"""ASGI middleware of the server, outermost first: observe (metrics and the request log line),
CORS (starlette's, only with --cors), the API key, and the request body's size and encoding.

Plain ASGI callables rather than ``BaseHTTPMiddleware``: they add no task per request, and a
refusal is sent before the body is read.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable

from attn_cli.serve.telemetry import ServeMetrics

BODY_METHODS = {b"POST", b"PUT", b"PATCH", "POST", "PUT", "PATCH"}


async def send_json(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    """Send a whole JSON response."""
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _printable(path: str, limit: int = 120) -> str:
    """A request path fit for one log line (no control characters, bounded length)."""
    text = "".join(c if c.isprintable() else "?" for c in path)
    return text if len(text) <= limit else text[:limit] + "..."


class Observe:
    """Counts every request by route and status, times it, and logs one line unless quiet."""

    def __init__(self, app, metrics: ServeMetrics, log: Callable[[str], None] | None) -> None:
        self.app, self.metrics, self.log = app, metrics, log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def observed_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            seconds = time.perf_counter() - start
            self.metrics.request(scope["path"], status, seconds)
            if self.log is not None:
                self.log(f"{scope['method']} {_printable(scope['path'])} {status} {seconds * 1000:.1f} ms")


class ApiKey:
    """Every path but the exempt ones needs ``Authorization: Bearer KEY`` (401 otherwise)."""

    def __init__(self, app, key: str, exempt: set[str], exempt_prefixes: tuple[str, ...]) -> None:
        self.app, self.exempt, self.prefixes = app, exempt, exempt_prefixes
        self.expected = b"Bearer " + key.encode("utf-8")

    def _allowed(self, scope) -> bool:
        path = scope["path"]
        if path in self.exempt or path.startswith(self.prefixes):
            return True
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        return hmac.compare_digest(given, self.expected)  # constant time whatever was sent

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            return await self.app(scope, receive, send)
        await send_json(send, 401, {"error": "this server needs an API key: send the header "
                                    "'Authorization: Bearer KEY'"}, {"WWW-Authenticate": "Bearer"})


class Body:
    """Refuses bodies over ``max_body`` bytes (413) and bodies that are not UTF-8 (400), then
    hands the app the body it read."""

    def __init__(self, app, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    def _too_large(self, size: str) -> dict:
        return {"error": f"the request body has {size} bytes; at most {self.max_body:,} are allowed",
                "limit": {"name": "--max-body", "value": self.max_body}}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                return await send_json(send, 413, self._too_large(f"{int(value):,}"))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await send_json(send, 413, self._too_large(f"over {self.max_body:,}"))
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            return await send_json(send, 400, {"error": f"the request body is not valid UTF-8 "
                                               f"(byte {e.start}); send UTF-8 JSON"})
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)
