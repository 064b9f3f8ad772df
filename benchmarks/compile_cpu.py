#!/usr/bin/env python
"""`attn train --compile` against eager on this CPU: the same short run side by side.

Each round trains `small` on Multi30k de→en for --steps steps (seed 1, no evaluation, a
metrics row every 10 steps) once eager and once with --compile, alternating which goes first,
with ``TORCH_LOGS=recompiles``. Per run it keeps: the recompiles (dynamo's "Recompiling
function" lines), the steady training speed (target tokens/s over the steps after the first
20, which hold the compile), the whole command's wall time and the last logged loss.
``--before DIR`` adds a third side: eager from another checkout (e.g. a ``git worktree`` of
the commit before a change), to see the change did not slow eager training.

    python benchmarks/compile_cpu.py --rounds 3 --out benchmarks/results/compile_cpu.jsonl
    python benchmarks/compile_cpu.py --report benchmarks/results/compile_cpu.jsonl

Run it on a quiet machine: both sides share the cores with anything else running.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared/data/translation/multi30k"
STEADY_FROM = 20  # rows after this step are past the compile (and the one recompile seen)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds (each runs every side once)")
    p.add_argument("--steps", type=int, default=60, help="training steps per run")
    p.add_argument("--preset", default="small", help="model preset")
    p.add_argument("--data", type=Path, default=DATA, help="the Multi30k folder (train.de/en, val.de/en)")
    p.add_argument("--before", type=Path, help="another checkout whose eager run is a third side")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/compile_cpu.jsonl",
                   help="JSON rows, one per run, appended as they finish")
    p.add_argument("--report", type=Path, help="only print the table of these rows")
    return p.parse_args(argv)


def one_run(side: str, args: argparse.Namespace, work: Path, tokenizer: Path | None) -> dict:
    """Train one side; its numbers from metrics.jsonl and the recompile log."""
    out = work / f"{side}-{time.time_ns()}"
    tree = args.before if side == "eager-before" else ROOT
    cmd = [sys.executable, "-m", "attn_cli", "train", "translate", "--data", str(args.data / "train"),
           "--valid", str(args.data / "val"), "--src", "de", "--tgt", "en", "--out", str(out),
           "--preset", args.preset, "--max-steps", str(args.steps), "--seed", "1", "--eval-every", "1000000",
           "--log-every", "10", "--device", "cpu", "--schedule", "inverse_sqrt"]
    if tokenizer is not None:
        cmd += ["--tokenizer", str(tokenizer)]
    if side == "compiled":
        cmd.append("--compile")
    env = {**os.environ, "PYTHONPATH": str(tree), "TORCH_LOGS": "recompiles"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["event"] == "train"]
    steady = [r for r in train if r["step"] > STEADY_FROM]
    return {"side": side, "steps": train[-1]["step"], "wall_s": round(wall, 1),
            "recompiles": proc.stderr.count("Recompiling function"),
            "steady_tokens_per_s": round(statistics.mean(r["tokens_per_s"] for r in steady)),
            "final_loss": train[-1]["loss"],
            "pad_fraction": round(statistics.mean(r["pad_fraction"] for r in train), 4),
            "run_dir": str(out)}


def report(rows: list[dict]) -> str:
    """Medians over rounds per side, and each side's ratio to eager."""
    sides = list(dict.fromkeys(r["side"] for r in rows))
    med = {s: {k: statistics.median(r[k] for r in rows if r["side"] == s)
               for k in ("steady_tokens_per_s", "wall_s", "recompiles", "final_loss", "pad_fraction")} for s in sides}
    lines = ["| side | runs | steady target tok/s (median) | / eager | wall s | recompiles | last loss | pad |",
             "|---|---|---|---|---|---|---|---|"]
    for s in sides:
        m, n = med[s], sum(r["side"] == s for r in rows)
        ratio = m["steady_tokens_per_s"] / med["eager"]["steady_tokens_per_s"] if "eager" in med else float("nan")
        lines.append(f"| {s} | {n} | {m['steady_tokens_per_s']:,.0f} | {ratio:.2f} | {m['wall_s']:.0f} | "
                     f"{m['recompiles']:.0f} | {m['final_loss']:.4f} | {m['pad_fraction']:.1%} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.report:
        print(report([json.loads(x) for x in args.report.read_text().splitlines()]))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sides = ["eager", "compiled"] + (["eager-before"] if args.before else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="attn-compile-") as tmp:
        work = Path(tmp)
        first = one_run("eager", args, work, None)  # trains the tokenizer the others reuse
        tokenizer = Path(first["run_dir"])
        for rnd in range(args.rounds):
            order = sides if rnd % 2 == 0 else sides[::-1]
            for side in order:
                row = {"round": rnd, **one_run(side, args, work, tokenizer), "load1": os.getloadavg()[0]}
                row.pop("run_dir")  # (a temporary directory)
                rows.append(row)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    print(report(rows))


if __name__ == "__main__":
    main()
