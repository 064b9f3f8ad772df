"""Does `attn pretrain` pay for its time? Pretrain + fine-tune against training from scratch, the
same total budget and the same seeds on each side, with the task's baseline computed in the same
run (docs/benchmarks-pretraining.md, "Pretraining").

Per seed S, with the task's recipes R (fine-tuning) and P (pretraining) in docs/recipes/:
  scratch:  attn train TASK --data DATA --config R --time-budget T
  pretrain: attn pretrain TASK --data TEXT --config P --time-budget T*share,
            then attn train TASK --data DATA --config R --init-from it --time-budget T*(1-share)
TEXT is written once to --out from training splits only (never a test or validation text):
  sst2       IMDB train reviews + SST-2 train sentences, one per line, masked LM
  imdb       IMDB train reviews, one per line, masked LM
  dialogsum  DialogSum train dialogues (their turns kept, one per line) and summaries, one
             document per blank-line-separated block (--documents), denoising (BART infilling)
Validation picks the best weights; test is evaluated once per run (`attn eval --split test`).
Baselines: TF-IDF + logistic regression (sentiment), lead-3 (DialogSum). Pipelines run
--parallel at a time, each on one intra-op thread.

    python benchmarks/pretrain_gain.py --task imdb --out /tmp/pretrain-gain --total 16m --seeds 1,2
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
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPES = ROOT / "docs" / "recipes"
sys.path.insert(0, str(HERE))
from baselines import lead3_baseline, read_jsonl, split_file, tfidf_baseline  # noqa: E402


@dataclass(frozen=True)
class Setup:
    task: str  # attn's task
    data: str  # under --data-root
    recipe: str  # fine-tuning and scratch
    pretrain_recipe: str
    texts: tuple[str, ...]  # training files (under --data-root) whose texts are pretrained on
    metric: str  # pretraining's validation metric, in state.json as "best"


SETUPS = {
    "sst2": Setup("sentiment", "sentiment/sst2", "sst2-small-cpu.toml", "sst2-pretrain-cpu.toml",
                  ("sentiment/imdb/train.jsonl.gz", "sentiment/sst2/train.jsonl"), "masked_accuracy"),
    "imdb": Setup("sentiment", "sentiment/imdb", "imdb-small-cpu.toml", "imdb-pretrain-cpu.toml",
                  ("sentiment/imdb/train.jsonl.gz",), "masked_accuracy"),
    "dialogsum": Setup("summarize", "summarization/dialogsum", "dialogsum-small-cpu.toml",
                       "dialogsum-pretrain-cpu.toml", ("summarization/dialogsum/train.jsonl",), "token_accuracy"),
}


def minutes(text: str) -> float:
    return float(text.rstrip("m"))


def write_text(setup: Setup, root: Path, out: Path) -> Path:
    """The pretraining text: sentiment texts one a line (whitespace flattened); for summarize
    each dialogue and each summary one document (non-empty lines kept), blank lines between."""
    path = out / "pretrain-text.txt"
    if path.is_file():
        return path
    n = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for name in setup.texts:
            opener = gzip.open if name.endswith(".gz") else open
            with opener(root / name, "rt", encoding="utf-8") as src:
                for line in src:
                    row = json.loads(line)
                    if setup.task == "sentiment":
                        fh.write(" ".join(row["text"].split()) + "\n")
                        n += 1
                        continue
                    for text in (row["dialogue"], row["summary"]):
                        lines = [" ".join(x.split()) for x in text.splitlines()]
                        fh.write("\n".join(x for x in lines if x) + "\n\n")
                        n += 1
    tmp.rename(path)
    print(f"wrote {n:,} texts to {path}", flush=True)
    return path


def test_subset(data: Path, out: Path, limit: int) -> Path:
    """A directory whose test split is ``limit`` evenly spaced test examples (smoke tests only:
    IMDB's test file is sorted by label), its train split a link to the real one (TF-IDF fits on it)."""
    sub = out / f"test-{limit}"
    sub.mkdir(exist_ok=True)
    rows = read_jsonl(split_file(data, "test"))
    with open(sub / "test.jsonl", "w", encoding="utf-8") as fh:
        for row in rows[::max(1, len(rows) // limit)][:limit]:
            fh.write(json.dumps(row) + "\n")
    train = split_file(data, "train")
    if not (sub / train.name).exists():
        (sub / train.name).symlink_to(train)
    return sub


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


def test_metrics(run_dir: Path, data: Path, log: Path) -> dict:
    cmd = attn("eval", "-m", run_dir, "--data", data, "--split", "test", "--json", "--engine", "torch")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    log.write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}; see {log}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def commands(kind: str, name: str, seed: int, total: float, share: float, data_root: Path, out: Path,
             text: Path) -> list[tuple[list[str], Path]]:
    """The ``(command, log)`` pairs of one pipeline for benchmark ``name`` (a SETUPS key) with
    ``total`` minutes; the run to evaluate is the last command's --out."""
    setup = SETUPS[name]
    data, recipe = data_root / setup.data, RECIPES / setup.recipe
    if kind == "scratch":
        return [(attn("train", setup.task, "--data", data, "--config", recipe, "--seed", seed, "--out",
                      out / f"scratch-{seed}", "--time-budget", f"{total:g}m", "--overwrite"),
                 out / f"scratch-{seed}.log")]
    pre = out / f"pre-{seed}"
    layout = "--documents" if setup.task == "summarize" else "--lines"
    return [(attn("pretrain", setup.task, "--data", text, layout, "--config", RECIPES / setup.pretrain_recipe,
                  "--seed", seed, "--out", pre, "--time-budget", f"{total * share:g}m", "--overwrite"),
             out / f"pre-{seed}.log"),
            (attn("train", setup.task, "--data", data, "--config", recipe, "--seed", seed, "--out", out / f"ft-{seed}",
                  "--init-from", pre, "--time-budget", f"{total * (1 - share):g}m", "--overwrite"),
             out / f"ft-{seed}.log")]


def run_dir_of(steps: list[tuple[list[str], Path]]) -> Path:
    """The run a pipeline ends with (its last command's --out): the one to evaluate."""
    last = steps[-1][0]
    return Path(last[last.index("--out") + 1])


def pipeline(kind: str, seed: int, args, text: Path) -> dict:
    setup, out = SETUPS[args.task], args.out
    started = time.perf_counter()
    steps = commands(kind, args.task, seed, minutes(args.total), args.share, args.data_root, out, text)
    for cmd, log in steps:
        run(cmd, log)
    run_dir = run_dir_of(steps)
    metrics = test_metrics(run_dir, args.test_data, out / f"{run_dir.name}-eval.log")
    row = {"kind": kind, "seed": seed, "valid": best_valid(run_dir),
           "test": metrics["accuracy"] if setup.task == "sentiment" else metrics["rouge1"],
           "wall_min": (time.perf_counter() - started) / 60}
    if setup.task == "summarize":
        row.update(rouge2=metrics["rouge2"], rougeL=metrics["rougeL"])
    if kind == "pretrain":
        row[setup.metric] = best_valid(out / f"pre-{seed}")
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(SETUPS), default="sst2", help="the benchmark [sst2]")
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data",
                    help="directory with sentiment/ and summarization/ [../shared/data]")
    ap.add_argument("--out", type=Path, required=True, help="where runs, logs and results.json go")
    ap.add_argument("--total", default="16m", help="budget of each pipeline, in minutes [16m]")
    ap.add_argument("--share", type=float, default=0.5, help="share of the budget spent pretraining [0.5]")
    ap.add_argument("--seeds", default="1,2", help="comma-separated seeds [1,2]")
    ap.add_argument("--parallel", type=int, default=2, help="pipelines at a time, one thread each [2]")
    ap.add_argument("--test-limit", type=int, default=0,
                    help="smoke tests: score only N evenly spaced test examples (0 = all) [0]")
    args = ap.parse_args(argv)
    setup = SETUPS[args.task]
    args.out.mkdir(parents=True, exist_ok=True)
    text = write_text(setup, args.data_root, args.out)
    data = args.data_root / setup.data
    args.test_data = test_subset(data, args.out, args.test_limit) if args.test_limit else data
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(kind, s) for s in seeds for kind in ("pretrain", "scratch")]
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda job: pipeline(*job, args, text), jobs))
    result = {"task": args.task, "total": args.total, "share": args.share, "seeds": seeds, "rows": rows}
    if args.test_limit:
        result["test_limit"] = args.test_limit
    if setup.task == "sentiment":
        baseline = tfidf_baseline(args.test_data, "test")
        result["tfidf_test_accuracy"] = baseline.get("accuracy")
        line = f"TF-IDF + LR test accuracy: {baseline.get('accuracy')}"
    else:
        baseline = lead3_baseline(args.test_data, "test")
        result["lead3_test"] = {k: baseline[k] for k in ("rouge1", "rouge2", "rougeL")}
        line = "lead-3 test ROUGE-1/2/L: " + " / ".join(f"{baseline[k]:.2f}" for k in ("rouge1", "rouge2", "rougeL"))
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    name = "accuracy" if setup.task == "sentiment" else "ROUGE-1"
    print(f"| side | seed | best validation | test {name} |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['seed']} | {r['valid']:.2f} | {r['test']:.2f} |")
    for kind in ("pretrain", "scratch"):
        tests = [r["test"] for r in rows if r["kind"] == kind]
        print(f"mean test {kind}: {sum(tests) / len(tests):.2f}")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
