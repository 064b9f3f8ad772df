"""What a time budget buys: each dataset trained at each budget with ``--preset auto`` and with
the fixed presets that bracket it, with the same seeds and all other options at their defaults,
one run at a time; test scores with the baseline on the same split (``attn eval --baseline``).

Each finished run appends one JSON row to --results at once, so a long study can be stopped and
continued (--skip-done); --report renders the rows as the markdown tables of docs/budget.md.

    python benchmarks/budget.py --tasks imdb --budgets 10m --presets auto,tiny,small --seeds 1
    python benchmarks/budget.py --tasks sst2,multi30k,dialogsum --budgets 10m --skip-done
    python benchmarks/budget.py --report docs/budget.md

Time budgets are only comparable on a quiet machine: run nothing else meanwhile. Each row keeps
the 1-minute load average before and after its training.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

from quality_runs import ROOT, attn_cmd, run_info, run_logged
from quality_tasks import TASKS, Task

DROPPED = ("--max-len",)  # quality.py's tuned options: the study leaves them at their defaults
SECONDARY = {"translate": ("chrf",), "summarize": ("rouge2", "rougeL"), "sentiment": ("macro_f1",)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="imdb,sst2,dialogsum,multi30k", help="datasets (quality_tasks.TASKS keys)")
    p.add_argument("--budgets", default="10m", help="time budgets, e.g. 10m,30m")
    p.add_argument("--presets", default="auto,tiny,small", help="presets to train at each budget")
    p.add_argument("--seeds", default="1", help="seeds, e.g. 1,2")
    p.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "budget", help="run directories")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "budget.jsonl",
                   help="JSONL file the rows are appended to")
    p.add_argument("--skip-done", action="store_true", help="skip combinations --results already holds")
    p.add_argument("--report", type=Path, default=None, help="write the markdown tables to this file and stop")
    return p.parse_args(argv)


def train_command(task: Task, args: argparse.Namespace, run_dir: Path, budget: str, preset: str,
                  seed: int) -> list[str]:
    """``attn train`` of ``task`` with its data options only (auto: no --preset at all)."""
    data = [a.format(data=args.data_root) for a in task.train]
    for name in DROPPED:
        while name in data:
            i = data.index(name)
            del data[i:i + 2]
    cmd = attn_cmd("train", task.task, *data, "--out", str(run_dir), "--time-budget", budget,
                   "--seed", str(seed), "--overwrite")
    return cmd if preset == "auto" else cmd + ["--preset", preset]


def eval_command(task: Task, args: argparse.Namespace, run_dir: Path) -> list[str]:
    ev = task.evals[0]
    return attn_cmd("eval", "--model", str(run_dir), "--data", ev.data.format(data=args.data_root),
                    "--split", ev.split, "--json", "--baseline")


def schedule_info(run_dir: Path) -> dict:
    """Peak and last learning rate, epochs and evaluations from metrics.jsonl."""
    lrs, epochs, evals = [], 0.0, 0
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            if row.get("event") == "train":
                lrs.append(row["lr"])
                epochs = row.get("epoch", epochs)
            evals += row.get("event") == "eval"
    except (OSError, ValueError):
        return {}
    return {"peak_lr": max(lrs, default=None), "last_lr": lrs[-1] if lrs else None,
            "epochs": round(epochs, 2), "evaluations": evals}


def final_lr_share(run_dir: Path) -> float | None:
    """The learning rate after the last step over the peak, from the run's own state: the
    linear schedule's factor at the step it stopped (last/state.json's horizon for a time budget)."""
    try:
        state = json.loads((run_dir / "last" / "state.json").read_text())
        cfg = json.loads((run_dir / "train_config.json").read_text())
    except (OSError, ValueError):
        return None
    end, warm = state.get("horizon") or cfg.get("max_steps"), max(1, cfg["warmup"])
    if not end:
        return None
    return max(0.0, 1 - (state["step"] - warm) / max(1, end - warm))


def one_run(task: Task, args: argparse.Namespace, budget: str, preset: str, seed: int) -> dict:
    """Train and evaluate one combination; the row for --results."""
    run_dir = args.runs_dir / f"{task.name}-{budget}-{preset}-s{seed}"
    log = args.runs_dir / f"{run_dir.name}.log"
    row = {"task": task.name, "budget": budget, "preset": preset, "seed": seed,
           "date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "load_before": round(os.getloadavg()[0], 2)}
    cmd = train_command(task, args, run_dir, budget, preset, seed)
    row["command"] = shlex.join(["attn", *cmd[3:]]).replace(str(args.data_root), "../shared/data")
    print(f"[{task.name} {budget} {preset} seed {seed}] training", file=sys.stderr, flush=True)
    code, secs, _ = run_logged(cmd, log)
    row.update(train_wall_s=round(secs, 1), load_after=round(os.getloadavg()[0], 2))
    if code != 0:
        return {**row, "error": f"attn train exited {code}, see {log}"}
    meta = json.loads((run_dir / "config.json").read_text())
    m = meta["model"]
    row.update(shape=f"d={m['d_model']} L={m['n_enc_layers']} ff={m['d_ff']}", auto=meta.get("auto"),
               **run_info(run_dir), **schedule_info(run_dir), final_lr_share=final_lr_share(run_dir))
    code, _, out = run_logged(eval_command(task, args, run_dir), log)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if code != 0 or not lines:
        return {**row, "error": f"attn eval exited {code}, see {log}"}
    result = json.loads(lines[-1])
    row["test"] = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    row["baseline"] = {k: v for k, v in (result.get("baseline") or {}).items() if isinstance(v, (int, float, str))}
    return row


def done_keys(path: Path) -> set[tuple]:
    if not path.is_file():
        return set()
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return {(r["task"], r["budget"], r["preset"], r["seed"]) for r in rows if "error" not in r}


def run_study(args: argparse.Namespace) -> None:
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    done = done_keys(args.results) if args.skip_done else set()
    for name in args.tasks.split(","):
        task = TASKS[name]
        for budget in args.budgets.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for preset in args.presets.split(","):
                    if (name, budget, preset, seed) in done:
                        continue
                    row = one_run(task, args, budget, preset, seed)
                    with open(args.results, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)


def _num(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def cell(row: dict, key: str) -> str:
    value = (row.get("test") or {}).get(key)
    return "—" if value is None else f"{value:.2f}"


def report(rows: list[dict]) -> str:
    """One markdown table per dataset: test scores beside the baseline, shape, steps, epochs."""
    out = []
    for name in dict.fromkeys(r["task"] for r in rows):
        task = TASKS[name]
        keys = (task.metric, *SECONDARY[task.task])
        out += [f"### {task.dataset} ({task.evals[0].split})", "",
                "| budget | preset | seed | " + " | ".join(keys) + " | baseline | shape | params | steps | "
                "epochs | best valid | final lr / peak | load | date |", "|" + "---|" * (len(keys) + 12)]
        for r in sorted((r for r in rows if r["task"] == name and "error" not in r),
                        key=lambda r: (r["budget"], r["seed"], r["preset"])):
            base = r.get("baseline") or {}
            ratio = f"{r['final_lr_share']:.1%}" if r.get("final_lr_share") is not None else "—"
            value = base.get(task.metric)
            base_cell = f"{value:.2f} ({base.get('name', '')})" if isinstance(value, (int, float)) else "—"
            out.append(f"| {r['budget']} | {r['preset']} | {r['seed']} | " + " | ".join(cell(r, k) for k in keys)
                       + f" | {base_cell} | {r.get('shape')} | {(r.get('params') or 0) / 1e6:.2f}M | "
                       f"{r.get('steps')} | {r.get('epochs')} | {_num(r.get('best_valid'))} | {ratio} | "
                       f"{r['load_before']}/{r['load_after']} | {r['date']} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report is not None:
        rows = [json.loads(ln) for ln in args.results.read_text().splitlines() if ln.strip()]
        text = args.report.read_text() if args.report.is_file() else ""
        start, end = "<!-- budget-table -->", "<!-- /budget-table -->"
        table = f"{start}\n{report(rows)}\n{end}"
        args.report.write_text(text.split(start)[0] + table + text.split(end)[1] if start in text and end in text
                               else text + "\n" + table + "\n")
        return
    run_study(args)


if __name__ == "__main__":
    main()
