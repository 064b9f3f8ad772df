"""Does `attn pretrain` pay for its time? Pretrain + fine-tune against training from scratch on
SST-2, the same total budget and the same seeds on each side, with the TF-IDF baseline of the
same run (docs/recipes/sst2-pretrain-cpu.md).

Per seed S:
  scratch:  attn train sentiment --data SST2 --config docs/recipes/sst2-small-cpu.toml --time-budget T
  pretrain: attn pretrain sentiment --data TEXT --config docs/recipes/sst2-pretrain-cpu.toml
                --time-budget T*share, then attn train sentiment --data SST2 --config
                docs/recipes/sst2-small-cpu.toml --init-from it --time-budget T*(1-share)
TEXT is the IMDB training reviews plus the SST-2 training sentences, one per line (never a test
text), written once to --out. Validation picks the best weights; test is evaluated once per run.
Pipelines run --parallel at a time, each on one intra-op thread.

    python benchmarks/pretrain_gain.py --out /tmp/pretrain-gain --total 16m --seeds 1,2
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from quality import tfidf_baseline  # noqa: E402

RECIPE = ROOT / "docs" / "recipes" / "sst2-small-cpu.toml"
PRETRAIN_RECIPE = ROOT / "docs" / "recipes" / "sst2-pretrain-cpu.toml"


def minutes(text: str) -> float:
    return float(text.rstrip("m"))


def write_text(data: Path, out: Path) -> Path:
    """IMDB train reviews + SST-2 train sentences, one text a line (newlines flattened)."""
    path = out / "pretrain-text.txt"
    if path.is_file():
        return path
    n = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        with gzip.open(data / "imdb" / "train.jsonl.gz", "rt", encoding="utf-8") as imdb:
            for line in imdb:
                fh.write(" ".join(json.loads(line)["text"].split()) + "\n")
                n += 1
        with open(data / "sst2" / "train.jsonl", encoding="utf-8") as sst:
            for line in sst:
                fh.write(" ".join(json.loads(line)["text"].split()) + "\n")
                n += 1
    tmp.rename(path)
    print(f"wrote {n:,} texts to {path}", flush=True)
    return path


def run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}; see {log}")


def attn(*args) -> list[str]:
    return [sys.executable, "-m", "attn_cli", *map(str, args)]


def best_valid(run_dir: Path) -> float:
    state = json.loads((run_dir / "last" / "state.json").read_text())
    return state["best"]


def test_accuracy(run_dir: Path, sst2: Path, log: Path) -> float:
    cmd = attn("eval", "-m", run_dir, "--data", sst2, "--split", "test", "--json", "--engine", "torch")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    log.write_text(out.stdout + out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])["accuracy"]


def pipeline(kind: str, seed: int, args, text: Path) -> dict:
    out, sst2, total = args.out, args.data / "sst2", minutes(args.total)
    started = time.perf_counter()
    if kind == "scratch":
        run_dir = out / f"scratch-{seed}"
        run(attn("train", "sentiment", "--data", sst2, "--config", RECIPE, "--seed", seed, "--out", run_dir,
                 "--time-budget", f"{total}m", "--overwrite"), out / f"scratch-{seed}.log")
    else:
        pre, run_dir = out / f"pre-{seed}", out / f"ft-{seed}"
        run(attn("pretrain", "sentiment", "--data", text, "--lines", "--config", PRETRAIN_RECIPE,
                 "--seed", seed, "--out", pre, "--time-budget", f"{total * args.share}m", "--overwrite"),
            out / f"pre-{seed}.log")
        run(attn("train", "sentiment", "--data", sst2, "--config", RECIPE, "--seed", seed, "--out", run_dir,
                 "--init-from", pre, "--time-budget", f"{total * (1 - args.share)}m", "--overwrite"),
            out / f"ft-{seed}.log")
    row = {"kind": kind, "seed": seed, "valid": best_valid(run_dir),
           "test": test_accuracy(run_dir, sst2, out / f"{run_dir.name}-eval.log"),
           "wall_min": (time.perf_counter() - started) / 60}
    if kind == "pretrain":
        row["masked_accuracy"] = best_valid(out / f"pre-{seed}")
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sentiment",
                    help="directory with sst2/ and imdb/ [../shared/data/sentiment]")
    ap.add_argument("--out", type=Path, required=True, help="where runs, logs and results.json go")
    ap.add_argument("--total", default="16m", help="budget of each pipeline, in minutes [16m]")
    ap.add_argument("--share", type=float, default=0.5, help="share of the budget spent pretraining [0.5]")
    ap.add_argument("--seeds", default="1,2", help="comma-separated seeds [1,2]")
    ap.add_argument("--parallel", type=int, default=2, help="pipelines at a time, one thread each [2]")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    text = write_text(args.data, args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(kind, s) for s in seeds for kind in ("pretrain", "scratch")]
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda job: pipeline(*job, args, text), jobs))
    baseline = tfidf_baseline(args.data / "sst2", "test")
    result = {"total": args.total, "share": args.share, "seeds": seeds, "rows": rows,
              "tfidf_test_accuracy": baseline.get("accuracy")}
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print("| side | seed | best validation | test |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['seed']} | {r['valid']:.2f} | {r['test']:.2f} |")
    for kind in ("pretrain", "scratch"):
        tests = [r["test"] for r in rows if r["kind"] == kind]
        print(f"mean test {kind}: {sum(tests) / len(tests):.2f}")
    print(f"TF-IDF + LR test accuracy: {baseline.get('accuracy')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
