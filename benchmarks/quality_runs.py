"""The attn runs of ``benchmarks/quality.py``: the ``attn train`` / ``attn eval`` commands of a
task, running them with their output logged, and what a run directory says about its training."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from quality_tasks import PRESET, Eval, Task

ROOT = Path(__file__).resolve().parent.parent


def attn_cmd(*args: str) -> list[str]:
    """``python -m attn_cli ARGS`` with this interpreter."""
    return [sys.executable, "-m", "attn_cli", *args]


def train_command(task: Task, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The ``attn train`` command of ``task`` under the budget (and the options' overrides)."""
    data = [a.format(data=args.data_root) for a in task.train]
    preset = args.preset or PRESET[args.budget]
    budget = args.time or task.budget[args.budget]
    cmd = attn_cmd("train", task.task, *data, "--out", str(run_dir), "--preset", preset,
                   "--time-budget", budget, "--overwrite", *task.extra.get(args.budget, []))
    if args.device:
        cmd += ["--device", args.device]
    return cmd + shlex.split(args.train_args)


def eval_command(task: Task, ev: Eval, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The ``attn eval --json`` command of ``run_dir`` on one split, hypotheses beside the run."""
    data = ev.data.format(data=args.data_root, runs=args.runs_dir)
    cmd = attn_cmd("eval", "--model", str(run_dir), "--data", data, "--split", ev.split, "--json",
                   "--output", str(run_dir.parent / f"{run_dir.name}.{ev.split}.hyp.txt"))
    if args.device:
        cmd += ["--device", args.device]
    return cmd


def link_flores(args: argparse.Namespace) -> None:
    """RUNS_DIR/_flores/flores101.devtest.{it,en} -> the shared .ita/.eng files."""
    d = args.runs_dir / "_flores"
    d.mkdir(parents=True, exist_ok=True)
    for ours, theirs in (("it", "ita"), ("en", "eng")):
        link = d / f"flores101.devtest.{ours}"
        target = (args.data_root / "translation/tatoeba-it-en" / f"flores101.devtest.{theirs}").resolve()
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)


def run_logged(cmd: list[str], log: Path) -> tuple[int, float, str]:
    """Run cmd with stderr to log (appended); return (exit code, seconds, stdout)."""
    start = time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True, cwd=ROOT)
        fh.write(proc.stdout)
    return proc.returncode, time.perf_counter() - start, proc.stdout


def recorded_command(run_dir: Path) -> tuple[str, dict]:
    """The `attn train` command that made an existing run, rebuilt from its config.json and
    train_config.json (options that differ from the defaults), and that configuration."""
    from attn_cli.config import TrainConfig

    meta = json.loads((run_dir / "config.json").read_text())
    cfg = json.loads((run_dir / "train_config.json").read_text())
    defaults = TrainConfig(task=cfg["task"]).to_dict()
    cmd = ["attn", "train", cfg["task"], "--data", meta["data"]["train"]]
    if meta["data"].get("valid"):
        cmd += ["--valid", meta["data"]["valid"]]
    for key, lang in (meta.get("languages") or {}).items():
        if lang:
            cmd += [f"--{key}", lang]
    for key, value in cfg.items():
        if key == "task" or value == defaults.get(key):
            continue
        flag = "--" + key.replace("_", "-")
        if key == "time_budget":
            cmd += [flag, f"{value / 60:g}m"]
        elif isinstance(value, bool):
            cmd += [flag] if value else []
        else:
            cmd += [flag, str(value)]
    return shlex.join(cmd + ["--out", str(run_dir)]), cfg


def pretrain_dir(task: Task, args: argparse.Namespace) -> Path:
    """Where --pretrain puts its runs for ``task``."""
    return args.runs_dir / f"{task.name}-{args.budget}-pretrain"


def pretrain_pipeline(task: Task, args: argparse.Namespace, text: Path) -> list[tuple[list[str], Path]]:
    """--pretrain: benchmarks/pretrain_gain.py's pretrain + fine-tune commands for ``task``."""
    import pretrain_gain

    from attn_cli.cli.train import parse_duration

    total = parse_duration(args.time or task.budget[args.budget]) / 60
    return pretrain_gain.commands("pretrain", task.name, 1, total, args.pretrain, args.data_root,
                                  pretrain_dir(task, args), text)


def run_pretrained(task: Task, args: argparse.Namespace, row: dict) -> Path | None:
    """Pretrain and fine-tune (--pretrain); the fine-tuned run directory, or None on failure."""
    import pretrain_gain

    out = pretrain_dir(task, args)
    out.mkdir(parents=True, exist_ok=True)
    text = pretrain_gain.write_text(pretrain_gain.SETUPS[task.name], args.data_root, out)
    steps = pretrain_pipeline(task, args, text)
    row["train_command"] = "; ".join(shlex.join(cmd) for cmd, _ in steps)
    start = time.perf_counter()
    for cmd, log in steps:
        print(f"[{task.name}] {shlex.join(cmd[2:5])} ...", file=sys.stderr, flush=True)
        code, _, _ = run_logged(cmd, log)
        if code != 0:
            row["error"] = f"{shlex.join(cmd[2:4])} exited {code}, see {log}"
            return None
    row["train_wall_s"] = round(time.perf_counter() - start, 1)
    return pretrain_gain.run_dir_of(steps)


def run_task(task: Task, args: argparse.Namespace) -> list[dict]:
    """Train ``task``'s model (or take an earlier one) and evaluate it: one row per split."""
    run_dir = args.runs_dir / f"{task.name}-{args.budget}"
    log = args.runs_dir / f"{task.name}-{args.budget}.log"
    row = {"task": task.name, "dataset": task.dataset, "budget": args.budget,
           "preset": args.preset or PRESET[args.budget], "time_budget": args.time or task.budget[args.budget],
           "run_dir": str(run_dir), "log": str(log)}
    cmd = train_command(task, args, run_dir)
    row["train_command"] = shlex.join(cmd)
    trained = obtain_run(task, args, row, cmd, run_dir, log)
    if trained is None:
        return [row]
    row.update(run_info(trained))
    return [evaluate(task, ev, args, row, trained, log) for ev in task.evals]


def obtain_run(task: Task, args: argparse.Namespace, row: dict, cmd: list[str], run_dir: Path,
               log: Path) -> Path | None:
    """The run directory to evaluate: pretrained and fine-tuned (--pretrain), an earlier run (--run),
    a reused one (--reuse) or one trained now by ``cmd``; None (and ``row['error']``) on failure.
    Records in ``row`` how it was trained."""
    if args.pretrain:
        pretrained = run_pretrained(task, args, row)
        if pretrained is None:
            return None
        row.update(run_dir=str(pretrained), preset="small", pretrain_share=args.pretrain,
                   time_budget=f"{row['time_budget']}, {args.pretrain:g} of it pretraining")
        return pretrained
    if task.name in args.runs:  # an earlier run: evaluate it, report how it was trained
        run_dir = args.runs[task.name]
        row["run_dir"] = str(run_dir)
        row["train_command"], cfg = recorded_command(run_dir)
        row.update(train_wall_s=None, preset=cfg["preset"], earlier_run=True,
                   time_budget=f"{cfg['time_budget'] / 60:g}m" if cfg.get("time_budget") else "—")
        print(f"[{task.name}] using the earlier run {run_dir}: {row['train_command']}", file=sys.stderr)
    elif args.reuse and (run_dir / "model.safetensors").is_file():
        row["train_wall_s"] = None
        print(f"[{task.name}] reusing {run_dir}", file=sys.stderr)
    else:
        print(f"[{task.name}] training ({row['time_budget']}): {row['train_command']}", file=sys.stderr, flush=True)
        code, secs, _ = run_logged(cmd, log)
        row["train_wall_s"] = round(secs, 1)
        if code != 0:
            row["error"] = f"attn train exited {code}, see {log}"
            return None
    return run_dir


def evaluate(task: Task, ev: Eval, args: argparse.Namespace, row: dict, run_dir: Path, log: Path) -> dict:
    """``attn eval`` of ``run_dir`` on one split: ``row`` plus the split, command, time, metrics."""
    r = dict(row, split=ev.split, split_note=ev.note)
    if ev.data.startswith("{runs}/_flores"):
        link_flores(args)
    cmd = eval_command(task, ev, args, run_dir)
    r["eval_command"] = shlex.join(cmd)
    print(f"[{task.name}] eval {ev.split}", file=sys.stderr, flush=True)
    code, secs, out = run_logged(cmd, log)
    r["eval_wall_s"] = round(secs, 1)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if code != 0 or not lines:
        r["error"] = f"attn eval exited {code}, see {log}"
    else:
        r["metrics"] = {k: v for k, v in json.loads(lines[-1]).items() if k != "confusion"}
    return r


def run_info(run_dir: Path) -> dict:
    """Parameters, steps and training seconds from the run directory."""
    info: dict = {}
    try:
        meta = json.loads((run_dir / "config.json").read_text())
        info["params"] = meta.get("parameters")
    except (OSError, ValueError):
        pass
    for state in (run_dir / "last" / "state.json", run_dir / ".last.old" / "state.json"):
        try:
            st = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        info.update(steps=st.get("step"), train_s=round(st.get("train_seconds", 0.0), 1),
                    best_valid=st.get("best"), best_step=st.get("best_step"),
                    units_per_s=round(st.get("tokens", 0) / max(st.get("train_seconds", 0.0), 1e-9)))
        break
    return info
