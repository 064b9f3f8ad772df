"""Running the app: the listening socket, uvicorn in a thread, and a graceful stop on signals.

The socket is bound here, before uvicorn starts, so a port in use is a one-line error and
``--port 0`` gets a free port whose URL is then printed. uvicorn runs in a worker thread while
the main thread waits for SIGTERM/SIGINT: the first one stops accepting connections, lets
requests in flight finish (up to ``GRACE`` seconds) and stops the model workers, so the process
exits 0 within 10 s; a second SIGINT quits at once.
"""

from __future__ import annotations

import errno
import signal
import socket
import threading
import time
from collections.abc import Callable

from attn_cli.errors import AttnError

GRACE = 5.0  # seconds requests in flight get to finish after a stop signal (workers: 3 more)
STOP_LIMIT = 9.5  # the main thread waits at most this long after a stop signal


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket (not yet listening) for host:port, or an AttnError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise AttnError(f"cannot resolve --host {host}: {e.strerror}", "use an address such as 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise AttnError(f"port {port} on {host} is already in use", "choose another --port, or --port 0 "
                            "for any free one") from None
        if e.errno == errno.EACCES:
            raise AttnError(f"no permission to listen on {host}:{port}", "use a port above 1023") from None
        raise AttnError(f"cannot listen on {host}:{port}: {e.strerror or e}", "check --host and --port") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def run(app, sock: socket.socket, on_ready: Callable[[str], None], note: Callable[[str], None]) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM or SIGINT, then stop gracefully and return."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=int(GRACE), ws="none", server_header=False)
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            failure.append(e)

    stopping: list[float] = []

    def on_signal(signum, _frame) -> None:
        if stopping and signum == signal.SIGINT:
            server.force_exit = True
        if not stopping:
            stopping.append(time.monotonic())
            note(f"stopping ({signal.Signals(signum).name}): finishing requests in flight")
        server.should_exit = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=target, name="attn-serve-http", daemon=True)
    try:
        thread.start()
        while thread.is_alive() and not server.started and not stopping:
            thread.join(0.05)
        if server.started:
            on_ready(url_of(sock))
        while thread.is_alive():
            thread.join(0.2)
            if stopping and time.monotonic() - stopping[0] > STOP_LIMIT:
                note("requests still running after the grace period were dropped")
                break
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
    if failure and not isinstance(failure[0], SystemExit | KeyboardInterrupt):
        raise AttnError(f"the server failed: {type(failure[0]).__name__}: {failure[0]}", "see the lines above")
    if not server.started and not stopping:
        raise AttnError("the server did not start", "see the lines above")
