"""`attn serve` under load, on loopback, against `attn translate -i` on the same file and engine.

For a trained de->en run (exported with `attn export` for the ctranslate2 engine):

  0. the engine alone in this process, all sentences in one call and in chunks of --chunks;
  1. `attn serve -m RUN --engine E --port 0 --quiet`, then --rounds times (medians reported):
     the CLI, `attn translate -m RUN --engine E -i test_2016_flickr.de` (wall time, and that wall
     minus the CLI's start-up, measured by translating one sentence), and the 1,000 sentences,
     one per request, from 1 client, then from 64 concurrent clients (keep-alive connections,
     one thread each): sentences/s, p50/p99 latency, texts per batch and the worker's busy
     share (from /metrics), outputs equal to the CLI's;
  2. 1,000 requests, a third of them random bad payloads (malformed JSON, wrong types, invalid
     UTF-8, NUL, oversized, unknown fields and routes, wrong methods), from 8 clients: 5xx count;
  3. optionally (--screenshot FILE) headless Chromium shows the page translating a sentence with
     its heatmap, saved as a PNG;
  4. SIGTERM: exit code and how long the stop took;
  5. memory: a fresh server gets --total requests (the test sentences in turn) from 64 clients,
     its RSS read after every 1,000: after the first 1,000 against after the last. A fresh
     server under one load, so that the comparison sees growth, not the step from the
     single-client phases' one-text batches to the concurrent ones' larger batches.

Every phase is bounded (request counts, --max-seconds overall). Results: a Markdown summary on
stdout and --json FILE.

    python benchmarks/serve_load.py runs/m30k --engine ctranslate2 --screenshot docs/serve.png
    python benchmarks/serve_load.py runs/m30k --engine torch --total 0 --bad 0
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_DE = ROOT.parent / "shared" / "data" / "translation" / "multi30k" / "test_2016_flickr.de"
ATTN = [sys.executable, "-m", "attn_cli"]  # this checkout's attn, installed or not


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def check(self, phase: str) -> None:
        if time.monotonic() > self.end:
            raise SystemExit(f"serve_load: over --max-seconds before {phase}; stopping")


def cli_rate(run: str, engine: str, path: Path) -> dict:
    """`attn translate -i` wall time on the file, and on one sentence (its start-up)."""
    env = {**os.environ, "COLUMNS": "120"}
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.de"
        one.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
        walls = {}
        for name, src in (("one", one), ("all", path)):
            start = time.perf_counter()
            subprocess.run([*ATTN, "translate", "-m", run, "--engine", engine, "-i", str(src), "-o",
                            str(Path(tmp) / f"{name}.en")], check=True, env=env, stderr=subprocess.DEVNULL)
            walls[name] = time.perf_counter() - start
        outputs = (Path(tmp) / "all.en").read_text(encoding="utf-8").splitlines()
    n = len(outputs)
    return {"sentences": n, "wall_s": walls["all"], "startup_s": walls["one"],
            "sent_per_s_wall": n / walls["all"], "sent_per_s_decode": n / max(1e-9, walls["all"] - walls["one"]),
            "outputs": outputs}


class Server:
    def __init__(self, run: str, engine: str, extra: list[str]) -> None:
        self.proc = subprocess.Popen([*ATTN, "serve", "-m", f"de-en={run}", "--engine", engine, "--port", "0",
                                      "--quiet", *extra], stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "COLUMNS": "200"})
        self.log: list[str] = []
        self.port = None
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 120
        while self.port is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("attn serve did not start:\n" + "".join(self.log))
            time.sleep(0.05)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)
            m = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def metrics(self) -> str:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request("GET", "/metrics")
        return c.getresponse().read().decode()

    def stop(self) -> tuple[int, float]:
        start = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = -9
        return code, time.perf_counter() - start


def clients(port: int, jobs: list, n_clients: int) -> tuple[list, float]:
    """Send ``jobs`` (method, path, body bytes, headers) from ``n_clients`` threads, each on its
    own keep-alive connection; returns [(index, status, latency s, body)] and the wall time."""
    results: list = [None] * len(jobs)
    lock = threading.Lock()
    nxt = [0]

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(jobs):
                break
            method, path, body, headers = jobs[i]
            start = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                status = r.status
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            except (OSError, http.client.HTTPException) as e:
                status, data = -1, repr(e).encode()
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            results[i] = (i, status, time.perf_counter() - start, data)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(n_clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


JSON = {"Content-Type": "application/json"}


def translate_jobs(sentences: list[str]) -> list:
    return [("POST", "/v1/translate", json.dumps({"text": s}, ensure_ascii=False).encode(), JSON)
            for s in sentences]


def bad_jobs(sentences: list[str], n: int, seed: int = 0) -> list:
    """``n`` requests, every third one good, the rest random bad payloads."""
    rng = random.Random(seed)
    tr = "/v1/translate"

    def js(obj) -> bytes:
        return json.dumps(obj).encode()

    kinds = [
        lambda s: ("POST", tr, s.encode()[: rng.randint(0, 30)], JSON),  # cut: not JSON
        lambda s: ("POST", tr, b'{"text": "' + bytes(rng.randrange(128, 256) for _ in range(8)) + b'"}', JSON),
        lambda s: ("POST", tr, js({"text": rng.choice([1, None, {}, [1], True, 2.5])}), JSON),
        lambda s: ("POST", tr, js({"text": s + "\u0000"}), JSON),
        lambda s: ("POST", tr, b'{"text": "\\udc80' + s.encode()[:10] + b'"}', JSON),  # lone surrogate
        lambda s: ("POST", tr, js({"text": ""}), JSON),
        lambda s: ("POST", tr, js({"text": [s] * 100}), JSON),
        lambda s: ("POST", tr, js({"text": "x" * 6000}), JSON),
        lambda s: ("POST", tr, b"x" * 1_100_000, JSON),
        lambda s: ("POST", tr, js({"text": s, "beam": rng.choice([-1, 0, 99, "5"])}), JSON),
        lambda s: ("POST", tr, js({"text": s, "file": "/etc/passwd"}), JSON),
        lambda s: ("POST", tr, js({"text": s, "model": "../../etc"}), JSON),
        lambda s: ("POST", "/v1/sentiment", js({"text": s}), JSON),
        lambda s: ("GET", f"/v1/{rng.getrandbits(40):x}", None, {}),
        lambda s: ("DELETE", tr, None, {}),
        lambda s: ("POST", tr, js({"text": s}), {"Content-Type": "text/plain"}),
    ]
    jobs = []
    for i in range(n):
        s = rng.choice(sentences)
        jobs.append(translate_jobs([s])[0] if i % 3 == 0 else rng.choice(kinds)(s))
    return jobs


def latency(results: list) -> dict:
    ms = sorted(r[2] * 1000 for r in results)
    return {"p50_ms": statistics.median(ms), "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))]}


def batch_stats(before: str, after: str, wall: float) -> dict:
    """Texts per batch, and the share of the wall time the worker spent in batches."""
    def delta(name: str) -> float:
        vals = [re.search(rf'{name}\{{model="de-en"\}} (\S+)', t) for t in (before, after)]
        return float(vals[1].group(1)) - (float(vals[0].group(1)) if vals[0] else 0.0) if vals[1] else 0.0
    batches = delta("attn_batch_texts_count")
    return {"texts_per_batch": delta("attn_batch_texts_sum") / batches if batches else float("nan"),
            "worker_busy": delta("attn_batch_seconds_sum") / wall}


def engine_chunks(run: str, engine: str, sentences: list[str], size: int) -> dict:
    """The engine alone, in this process: all sentences in one call (as the CLI), then in
    consecutive chunks of ``size`` (as the server's batches can be at best): sentences/s."""
    from attn_cli.config import task_decode_config
    from attn_cli.infer.engine import EngineOptions
    from attn_cli.infer.engines import open_engine
    from attn_cli.infer.runs import encode_inputs

    eng = open_engine(run, "translate", EngineOptions(engine))
    ids, _ = encode_inputs(eng, sentences)
    cfg = task_decode_config("translate")  # what attn translate and the server use
    start = time.perf_counter()
    eng.generate(ids, cfg)
    whole = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, len(ids), size):
        eng.generate(ids[i:i + size], cfg)
    chunked = time.perf_counter() - start
    return {"chunk": size, "all_sent_per_s": len(ids) / whole, "chunked_sent_per_s": len(ids) / chunked}


def screenshot(url: str, sentence: str, path: Path) -> None:
    """The page translating ``sentence``, with a heatmap cell hovered, as a PNG."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("google-chrome") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1300",
                "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=opts)
    try:
        d.get(url)
        WebDriverWait(d, 30).until(lambda d: d.find_element(By.ID, "run").is_enabled())
        d.find_element(By.ID, "text").send_keys(sentence)
        d.find_element(By.ID, "run").click()
        cells = WebDriverWait(d, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "td.heat-cell"))
        rows = d.find_elements(By.CSS_SELECTOR, "th.out")
        row = min(2, len(rows) - 1)
        weights = d.execute_script(
            "return [...document.querySelectorAll('td.heat-cell')].map(c => +c.style.getPropertyValue('--w'))")
        n_src = len(cells) // len(rows)
        col = max(range(n_src), key=lambda j: weights[row * n_src + j])
        ActionChains(d).move_to_element(cells[row * n_src + col]).perform()
        time.sleep(0.3)
        d.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.3)
        d.save_screenshot(str(path))
    finally:
        d.quit()


def memory(args, sentences: list[str], deadline: Deadline) -> dict:
    """A fresh server, --total requests from --clients clients; RSS after every 1,000."""
    server = Server(args.run, args.engine, args.serve_args.split())
    trace, sent, errors = [], 0, 0
    try:
        while sent < args.total:
            deadline.check("the memory phase")
            step = min(1000, args.total - sent)
            jobs = translate_jobs([sentences[(sent + i) % len(sentences)] for i in range(step)])
            res, _ = clients(server.port, jobs, args.clients)
            sent += len(res)
            errors += sum(r[1] != 200 for r in res)
            trace.append((sent, server.rss_mb()))
    finally:
        server.stop()
    first, last = trace[0][1], trace[-1][1]
    print(f"memory (fresh server, {args.clients} clients): RSS {first:.1f} MB after the first {trace[0][0]:,} "
          f"requests, {last:.1f} MB after {sent:,} ({last / first - 1:+.1%}), {errors} errors; trace (requests, "
          "MB): " + ", ".join(f"{n} {mb:.0f}" for n, mb in trace), flush=True)
    return {"requests": sent, "errors": errors, "rss_mb_after_first": first, "rss_mb_after_total": last,
            "growth": last / first - 1, "trace": trace}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a de->en run directory (attn export it for --engine ctranslate2)")
    ap.add_argument("--engine", default="ctranslate2", choices=("torch", "ctranslate2"))
    ap.add_argument("--data", type=Path, default=TEST_DE, help="one German sentence per line")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--bad", type=int, default=1000, help="requests in the bad-payload phase (0 = skip)")
    ap.add_argument("--total", type=int, default=10_000, help="requests to a fresh server in the memory "
                    "phase (0 = skip)")
    ap.add_argument("--screenshot", type=Path, default=None, help="save the page's screenshot here")
    ap.add_argument("--max-seconds", type=float, default=1200)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--serve-args", default="", help="extra attn serve options, e.g. '--max-wait-ms 2'")
    ap.add_argument("--rounds", type=int, default=3, help="CLI / 1 client / N clients rounds (medians)")
    ap.add_argument("--chunks", type=int, default=32, help="also time the engine alone on chunks of "
                    "this many sentences (0 = skip)")
    args = ap.parse_args()
    deadline = Deadline(args.max_seconds)
    sentences = args.data.read_text(encoding="utf-8").splitlines()
    out: dict = {"engine": args.engine, "run": args.run, "clients": args.clients, "date": time.strftime("%Y-%m-%d")}

    if args.chunks:
        out["engine_alone"] = e = engine_chunks(args.run, args.engine, sentences, args.chunks)
        print(f"engine alone: {e['all_sent_per_s']:.1f} sentences/s in one call, {e['chunked_sent_per_s']:.1f} "
              f"in chunks of {args.chunks}", flush=True)
    deadline.check("the server")
    server = Server(args.run, args.engine, args.serve_args.split())
    sent = 0
    rounds: list[dict] = []
    try:
        clients(server.port, translate_jobs(sentences[:20]), 4)  # warm-up
        sent += 20
        for k in range(args.rounds):  # CLI, 1 client, N clients; again: medians over rounds
            deadline.check(f"round {k + 1}")
            rnd = {"cli": cli_rate(args.run, args.engine, args.data)}
            cli_outputs = rnd["cli"].pop("outputs")
            c = rnd["cli"]
            print(f"round {k + 1}: CLI {c['sentences']} sentences in {c['wall_s']:.2f} s ({c['sent_per_s_wall']:.1f}/s;"
                  f" start-up {c['startup_s']:.2f} s, {c['sent_per_s_decode']:.1f}/s without it)", flush=True)
            for name, n_clients in (("single", 1), ("concurrent", args.clients)):
                before = server.metrics()
                res, wall = clients(server.port, translate_jobs(sentences), n_clients)
                sent += len(res)
                texts = [json.loads(r[3])["outputs"][0]["text"] if r[1] == 200 else None for r in res]
                rnd[name] = r = {"clients": n_clients, "wall_s": wall, "sent_per_s": len(res) / wall,
                                 "errors": sum(r[1] != 200 for r in res), **latency(res),
                                 **batch_stats(before, server.metrics(), wall),
                                 "same_as_cli": sum(t == c for t, c in zip(texts, cli_outputs, strict=False))}
                print(f"  {n_clients:>3} client(s): {r['sent_per_s']:.1f} sentences/s, p50 {r['p50_ms']:.1f} ms, "
                      f"p99 {r['p99_ms']:.1f} ms, {r['texts_per_batch']:.1f} texts/batch, worker busy "
                      f"{r['worker_busy']:.0%}, {r['same_as_cli']}/{len(res)} as the CLI, {r['errors']} errors",
                      flush=True)
            rounds.append(rnd)
        out["rounds"] = rounds
        for part in ("cli", "single", "concurrent"):
            keys = [k for k, v in rounds[0][part].items() if isinstance(v, int | float)]
            out[part] = {k: statistics.median(r[part][k] for r in rounds) for k in keys}
        if args.bad:
            deadline.check("bad payloads")
            res, wall = clients(server.port, bad_jobs(sentences, args.bad), 8)
            sent += len(res)
            codes: dict[int, int] = {}
            for r in res:
                codes[r[1]] = codes.get(r[1], 0) + 1
            out["bad"] = {"requests": len(res), "status_counts": dict(sorted(codes.items())),
                          "5xx": sum(v for k, v in codes.items() if k >= 500),
                          "transport_errors": codes.get(-1, 0)}
            print(f"bad payloads: {len(res)} requests, statuses {out['bad']['status_counts']} "
                  f"(-1: connection error), 5xx: {out['bad']['5xx']}", flush=True)
        if args.screenshot:
            deadline.check("the screenshot")
            screenshot(f"http://127.0.0.1:{server.port}/", "Ein Mann mit einem orangefarbenen Hut starrt auf etwas.",
                       args.screenshot)
            print(f"screenshot: {args.screenshot}", flush=True)
    finally:
        code, took = server.stop()
    out["requests"], out["stop"] = sent, {"exit_code": code, "seconds": took}
    if args.total:
        deadline.check("the memory phase")
        out["memory"] = memory(args, sentences, deadline)
    s, c, cl = out["single"], out["concurrent"], out["cli"]
    out["ratios"] = {"concurrent_vs_cli_wall": c["sent_per_s"] / cl["sent_per_s_wall"],
                     "concurrent_vs_cli_decode": c["sent_per_s"] / cl["sent_per_s_decode"],
                     "concurrent_vs_single": c["sent_per_s"] / s["sent_per_s"]}
    print(f"SIGTERM: exit {code} after {took:.2f} s")
    print(f"medians of {args.rounds} rounds: CLI {cl['sent_per_s_wall']:.1f}/s ({cl['sent_per_s_decode']:.1f} without "
          f"start-up), 1 client {s['sent_per_s']:.1f}/s (p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f}), "
          f"{args.clients} clients {c['sent_per_s']:.1f}/s (p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f})")
    print(f"{args.clients} clients / CLI: {out['ratios']['concurrent_vs_cli_wall']:.2f} (wall), "
          f"{out['ratios']['concurrent_vs_cli_decode']:.2f} (without start-up); "
          f"{args.clients} clients / 1 client: {out['ratios']['concurrent_vs_single']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
