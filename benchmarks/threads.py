"""Threads for decoding on this machine: `attn translate -i FILE` per engine and thread setting.

Each setting runs as its own command, one after the other, ``--rounds`` times in turn (so that
noise hits every setting alike); the table shows the median wall time, sentences/s, and whether
the outputs are the same as the first setting's of that engine. torch is run with 1 intra-op
thread and with its default (one per core); CTranslate2 with 1 and 2 intra-op threads and its
replicas (``inter_threads``) at 1 and at one per core, the last being attn's auto. The engine
options go through the environment variable ATTN_CT2_REPLICAS, read only by this benchmark's
wrapper below, so the command is attn's own.

    python benchmarks/threads.py RUN_DIR [--data FILE] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_DE = ROOT.parent / "shared" / "data" / "translation" / "multi30k" / "test_2016_flickr.de"

# Runs `attn translate` with CTranslate2's replicas fixed (attn's auto is one per core).
WRAPPER = """
import os, sys
import attn_cli.infer.ct2 as e
n = int(os.environ["ATTN_CT2_REPLICAS"])
auto = e.ct2_threads
e.ct2_threads = lambda threads, device: (auto(threads, device)[0], n)
from attn_cli.cli.main import main
sys.argv = ["attn", *sys.argv[1:]]
main()
"""


def settings() -> list[tuple[str, str, list[str], int | None]]:
    """(label, engine, extra options, CTranslate2 replicas or None for attn's auto)."""
    cores = os.cpu_count() or 1
    return [("torch, 1 thread", "torch", ["--threads", "1"], None),
            (f"torch, auto ({cores} threads)", "torch", [], None),
            ("ctranslate2, 1 thread, 1 replica", "ctranslate2", ["--threads", "1"], 1),
            ("ctranslate2, 2 threads, 1 replica", "ctranslate2", ["--threads", "2"], 1),
            (f"ctranslate2, auto (1 thread, {cores} replicas)", "ctranslate2", [], None)]


def run_once(run: str, engine: str, extra: list[str], replicas: int | None, data: Path, out: Path) -> float:
    cmd = ["translate", "-m", run, "--engine", engine, *extra, "-i", str(data), "-o", str(out)]
    env = dict(os.environ)
    if replicas is None:
        argv = [sys.executable, "-m", "attn_cli", *cmd]
    else:
        argv = [sys.executable, "-c", WRAPPER, *cmd]
        env["ATTN_CT2_REPLICAS"] = str(replicas)
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a translate run directory, exported with attn export")
    ap.add_argument("--data", type=Path, default=TEST_DE, help="one source sentence per line")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n = len(args.data.read_text(encoding="utf-8").splitlines())
    rows = settings()
    walls: dict[str, list[float]] = {label: [] for label, *_ in rows}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {label: Path(tmp) / f"{k}.txt" for k, (label, *_) in enumerate(rows)}
        for r in range(args.rounds):
            for label, engine, extra, replicas in rows:
                walls[label].append(run_once(args.run, engine, extra, replicas, args.data, outs[label]))
                print(f"round {r + 1}: {label}: {walls[label][-1]:.2f} s", file=sys.stderr, flush=True)
        texts = {label: p.read_text(encoding="utf-8") for label, p in outs.items()}
    print(f"| setting | wall, median of {args.rounds} | sentences/s | outputs as the engine's first row |")
    print("|---|---|---|---|")
    first: dict[str, str] = {}
    for label, engine, *_ in rows:
        first.setdefault(engine, label)
        wall = statistics.median(walls[label])
        same = "yes" if texts[label] == texts[first[engine]] else "no"
        print(f"| {label} | {wall:.2f} s | {n / wall:.1f} | {same} |")


if __name__ == "__main__":
    main()
