"""Shared by test_serve.py and test_browser.py: tiny runs of the three tasks (trained once per
test process) and a live `attn serve` subprocess on a free loopback port."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import train_tiny_runs

_RUNS: dict[str, Path] = {}
_LOCK = threading.Lock()


def tiny_runs() -> Path:
    """A directory with translate/, summarize/ and sentiment/: tiny models, 30 steps each (what
    they say matters little here, but it is not empty)."""
    with _LOCK:
        if "root" not in _RUNS:
            root = Path(tempfile.mkdtemp(prefix="attn-serve-runs-"))
            atexit.register(shutil.rmtree, root, True)
            train_tiny_runs(root)
            _RUNS["root"] = root
        return _RUNS["root"]


class LiveServer:
    """`attn serve ARGS --port 0` in a subprocess; ``url`` once it said where it listens."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, start_timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "attn_cli", "serve", *args, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {}), "COLUMNS": "200"})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + start_timeout
        self.url = None
        while self.url is None:
            for line in list(self.lines):
                m = re.search(r"serving on (http://[\d.]+:\d+)", line)
                if m:
                    self.url = m.group(1)
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("attn serve did not start:\n" + "".join(self.lines))
            time.sleep(0.05)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def call(self, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST")
        req.add_header("Content-Type", "application/json")
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig``; the exit code (the test fails on a hang past ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._reader.join(2)

    @property
    def log(self) -> str:
        return "".join(self.lines)
