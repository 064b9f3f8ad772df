#!/usr/bin/env python
"""Quality suite: train and evaluate attn on real data under a stated budget, with baselines.

    python benchmarks/quality.py --budget cpu                   # all five datasets, ~1 h each
    python benchmarks/quality.py --budget gpu --tasks multi30k,imdb
    python benchmarks/quality.py --dry-run                      # print the commands only
    python benchmarks/quality.py --baselines-only               # TF-IDF + LR and lead-3 only
    python benchmarks/quality.py --tasks imdb --pretrain 0.5    # docs/recipes: pretrain, then fine-tune

For each dataset it runs ``python -m attn_cli train ...`` (a subprocess, exactly what a user
types) with a time budget, then ``python -m attn_cli eval ... --json`` on the test split(s), and
computes the in-run baselines on the same splits: TF-IDF (unigrams+bigrams, min_df 2, sublinear
tf) + logistic regression (C=4) for SST-2 and IMDB with scikit-learn, and lead-3 (the first three
turns of the dialogue) for DialogSum, scored with ``attn_cli.eval.metrics.rouge`` against the three
references. It writes a markdown table (dataset, split, preset, parameters, hardware, wall
time, metric, target, reference points, baseline) to ``--md`` and everything to ``--json``.

Data come from ``../shared/data`` (``--data-root``). Validation: Multi30k ``val``, Tatoeba,
SST-2 and DialogSum their ``validation`` files; IMDB has only train/test, so ``attn train``
holds out a fixed-seed 1% of train (250 reviews). FLORES-101 devtest files are named ``.ita`` /
``.eng`` while the Tatoeba model knows ``it`` / ``en`` and ``attn eval`` has no language
options, so this script points ``attn eval`` at a prefix of symbolic links
``RUNS_DIR/_flores/flores101.devtest.{it,en}`` to the shared files (nothing is copied).
Test numbers are reported once per configuration; nothing here selects on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from baselines import lead3_baseline, tfidf_baseline

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Eval:
    split: str  # the label in the table (and --split of attn eval)
    data: str  # the SPEC, relative to the data root unless it starts with "{runs}"
    note: str = ""  # e.g. "out-of-domain"


@dataclass
class Task:
    name: str  # --tasks key
    dataset: str  # shown in the table
    task: str  # attn task
    train: list[str]  # attn train data options (paths relative to the data root: "{data}/...")
    evals: list[Eval]
    metric: str  # primary metric key of attn eval --json
    refs: str  # published/measured reference points (../shared/data/README.md)
    target: dict[str, str]  # budget -> the target
    budget: dict[str, str]  # budget -> --time-budget
    extra: dict[str, list[str]] = field(default_factory=dict)  # budget -> more train options
    baseline: str | None = None  # "tfidf" | "lead3"


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("multi30k", "Multi30k de→en", "translate",
         ["--data", "{data}/translation/multi30k/train", "--valid", "{data}/translation/multi30k/val",
          "--src", "de", "--tgt", "en"],
         [Eval("test_2016_flickr", "{data}/translation/multi30k")], "bleu",
         "36.5 BLEU (3+3 layers, d=256, 9M params, greedy; torchtext BLEU on spaCy tokens, "
         "not sacreBLEU)",
         {"cpu": "BLEU ≥ 32", "gpu": "BLEU ≥ 38"}, {"cpu": "60m", "gpu": "60s"},
         {"cpu": ["--lr", "1e-3", "--eval-samples", "1014"],
          "gpu": ["--lr", "1e-3", "--eval-samples", "1014", "--max-tokens", "16384"]}),
    Task("tatoeba", "Tatoeba it→en", "translate",
         ["--data", "{data}/translation/tatoeba-it-en", "--src", "it", "--tgt", "en"],
         [Eval("test", "{data}/translation/tatoeba-it-en"),
          Eval("flores101.devtest", "{runs}/_flores/flores101.devtest", "FLORES-101, out-of-domain")],
         "bleu", "none published for this split",
         {"cpu": "BLEU ≥ 40 (test)", "gpu": "—"}, {"cpu": "60m", "gpu": "30s"},
         {"cpu": ["--lr", "1e-3", "--warmup", "300", "--eval-every", "200"],
          "gpu": ["--max-tokens", "16384"]}),
    Task("sst2", "SST-2", "sentiment", ["--data", "{data}/sentiment/sst2"],
         [Eval("test", "{data}/sentiment/sst2")], "accuracy",
         "BoW LR 80.4% (GLUE dev); CNN, random embeddings 83.5% (Kim 2014); pretrained 85-95%; "
         "TF-IDF+LR 83.1% (data README)",
         {"cpu": "acc ≥ 83.5", "gpu": "—"}, {"cpu": "60m", "gpu": "25s"},
         {"gpu": ["--max-tokens", "16384"]}, baseline="tfidf"),
    Task("imdb", "IMDB", "sentiment", ["--data", "{data}/sentiment/imdb"],
         [Eval("test", "{data}/sentiment/imdb")], "accuracy",
         "1 transformer block, 200 tokens 87.5%; NBSVM bigrams 91.2%; TF-IDF+LR 90.4% (data README)",
         {"cpu": "acc ≥ 88", "gpu": "acc ≥ 90.5"}, {"cpu": "60m", "gpu": "40s"},
         {"cpu": ["--max-len", "256", "--dropout", "0.2", "--ema", "0.999", "--warmup", "300",
                  "--eval-every", "200"],
          "gpu": ["--max-len", "512", "--max-tokens", "32768"]}, baseline="tfidf"),
    Task("dialogsum", "DialogSum", "summarize",
         ["--data", "{data}/summarization/dialogsum", "--max-len", "512"],
         [Eval("test", "{data}/summarization/dialogsum")], "rouge1",
         "lead-3 27.3/10.6/21.6, longest-3 25.2/10.2/19.3 (R-1/2/L, 3 refs); BART mid-to-high 40s R-1",
         {"cpu": "R-1 > 27.3 (lead-3)", "gpu": "R-1 ≥ 36"}, {"cpu": "60m", "gpu": "45s"},
         {"gpu": ["--max-tokens", "16384"]}, baseline="lead3"),
]}
PRESET = {"cpu": "small", "gpu": "base"}


# ------------------------------------------------------------------------------ baselines


def run_baseline(task: Task, data_root: Path) -> dict:
    directory = Path(task.train[1].format(data=data_root))
    return tfidf_baseline(directory) if task.baseline == "tfidf" else lead3_baseline(directory)


# ------------------------------------------------------------------------------ attn runs


def attn_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "attn_cli", *args]


def train_command(task: Task, args, run_dir: Path) -> list[str]:
    data = [a.format(data=args.data_root) for a in task.train]
    preset = args.preset or PRESET[args.budget]
    budget = args.time or task.budget[args.budget]
    cmd = attn_cmd("train", task.task, *data, "--out", str(run_dir), "--preset", preset,
                   "--time-budget", budget, "--overwrite", *task.extra.get(args.budget, []))
    if args.device:
        cmd += ["--device", args.device]
    return cmd + shlex.split(args.train_args)


def eval_command(task: Task, ev: Eval, args, run_dir: Path) -> list[str]:
    data = ev.data.format(data=args.data_root, runs=args.runs_dir)
    cmd = attn_cmd("eval", "--model", str(run_dir), "--data", data, "--split", ev.split, "--json",
                   "--output", str(run_dir.parent / f"{run_dir.name}.{ev.split}.hyp.txt"))
    if args.device:
        cmd += ["--device", args.device]
    return cmd


def link_flores(args) -> None:
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


def pretrain_dir(task: Task, args) -> Path:
    return args.runs_dir / f"{task.name}-{args.budget}-pretrain"


def pretrain_pipeline(task: Task, args, text: Path) -> list[tuple[list[str], Path]]:
    """--pretrain: benchmarks/pretrain_gain.py's pretrain + fine-tune commands for ``task``."""
    import pretrain_gain

    from attn_cli.cli.train import parse_duration

    total = parse_duration(args.time or task.budget[args.budget]) / 60
    return pretrain_gain.commands("pretrain", task.name, 1, total, args.pretrain, args.data_root,
                                  pretrain_dir(task, args), text)


def run_pretrained(task: Task, args, row: dict) -> Path | None:
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


def run_task(task: Task, args) -> list[dict]:
    run_dir = args.runs_dir / f"{task.name}-{args.budget}"
    log = args.runs_dir / f"{task.name}-{args.budget}.log"
    row = {"task": task.name, "dataset": task.dataset, "budget": args.budget,
           "preset": args.preset or PRESET[args.budget], "time_budget": args.time or task.budget[args.budget],
           "run_dir": str(run_dir), "log": str(log)}
    cmd = train_command(task, args, run_dir)
    row["train_command"] = shlex.join(cmd)
    if args.pretrain:
        run_dir = run_pretrained(task, args, row)
        if run_dir is None:
            return [row]
        row.update(run_dir=str(run_dir), preset="small", pretrain_share=args.pretrain,
                   time_budget=f"{row['time_budget']}, {args.pretrain:g} of it pretraining")
    elif task.name in args.runs:  # an earlier run: evaluate it, report how it was trained
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
            return [row]
    row.update(run_info(run_dir))
    rows = []
    for ev in task.evals:
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
        rows.append(r)
    return rows


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


# ------------------------------------------------------------------------------ report


def hardware(device: str | None) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def fmt_metric(task: str, m: dict | None) -> str:
    if not m:
        return "—"
    if task == "translate":
        return f"BLEU {m['bleu']:.1f} (chrF {m['chrf']:.1f})"
    if task == "sentiment":
        return f"acc {m['accuracy']:.1f} (F1 {m['macro_f1']:.1f})"
    return f"R-1/2/L {m['rouge1']:.1f}/{m['rouge2']:.1f}/{m['rougeL']:.1f}"


def fmt_baseline(b: dict | None) -> str:
    if not b:
        return "—"
    if "accuracy" in b:
        return f"{b['name']}: acc {b['accuracy']:.1f}"
    text = f"{b['name']}: R-1/2/L {b['rouge1']:.1f}/{b['rouge2']:.1f}/{b['rougeL']:.1f}"
    if "with_speaker_tags" in b:
        t = b["with_speaker_tags"]
        text += f"; with tags kept {t['rouge1']:.1f}/{t['rouge2']:.1f}/{t['rougeL']:.1f}"
    return text


def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def markdown(rows: list[dict], baselines: dict, meta: dict, tasks: list[Task]) -> str:
    lines = [f"## Quality, `--budget {meta['budget']}` ({meta['date']})", "",
             f"Hardware: {meta['hardware']}. torch {meta['torch']}, attn {meta['attn']}.  ",
             f"Command: `{meta['command']}`", "",
             "| dataset | split | preset | params | hardware | train (budget) | eval | ours | target | "
             "reference points | in-run baseline |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in tasks:
        task_rows = [r for r in rows if r["task"] == t.name] or [{"task": t.name, "split": t.evals[0].split}]
        for r in task_rows:
            ours = fmt_metric(t.task, r.get("metrics")) if "error" not in r else f"failed: {r['error']}"
            split = r.get("split", t.evals[0].split) + (f" ({r['split_note']})" if r.get("split_note") else "")
            params = f"{r['params'] / 1e6:.1f}M" if r.get("params") else "—"
            steps = f", {r['steps']:,} steps" if r.get("steps") else ""
            if r.get("units_per_s"):
                steps += f", {r['units_per_s']:,} {'ex' if t.task == 'sentiment' else 'tgt tok'}/s"
            wall = r.get("train_wall_s") if r.get("train_wall_s") is not None else r.get("train_s")
            train = f"{fmt_time(wall)} ({r.get('time_budget', '—')}{steps})"
            if r.get("earlier_run"):
                train += f", earlier run: `{r['train_command']}`"
            target = t.target.get(meta["budget"], "—") if r.get("split") == t.evals[0].split else "—"
            base = baselines.get(t.name) if r.get("split") == "test" else None
            lines.append(f"| {t.dataset} | {split} | {r.get('preset', '—')} | {params} | {meta['hardware']} | "
                         f"{train} | {fmt_time(r.get('eval_wall_s'))} | {ours} | "
                         f"{target} | {t.refs} | {fmt_baseline(base)} |")
    lines += ["", "Notes: BLEU/chrF are sacreBLEU on detokenized text (13a), beam 5; ROUGE is rouge-score "
              "F1 with stemming, best of the three DialogSum references, beam 4; accuracy and macro-F1 on the "
              "full test split. `train` is wall time of `attn train` (tokenizer, data preparation and "
              "evaluations included; the budget bounds the training loop). IMDB validation is a fixed-seed "
              "1% held out of train (the data has no validation split). FLORES-101 devtest is read through "
              "links `.it`/`.en` to the shared `.ita`/`.eng` files. The published Multi30k figure is not "
              "sacreBLEU and is not directly comparable."]
    return "\n".join(lines) + "\n"


def report(args, tasks: list[Task]) -> int:
    """Merge earlier results files into one table (no training, no evaluation)."""
    baselines: dict[str, dict] = {}
    rows: dict[str, list[dict]] = {}
    metas = []
    for path in args.report:
        saved = json.loads(path.read_text())
        metas.append(saved["meta"])
        baselines.update(saved.get("baselines", {}))
        for name in {r["task"] for r in saved.get("results", [])}:
            rows[name] = [r for r in saved["results"] if r["task"] == name]
    budgets = {m["budget"] for m in metas}
    if len(budgets) != 1:
        sys.exit(f"error: the files mix budgets {sorted(budgets)}; merge one budget at a time")
    meta = dict(metas[-1], command="; ".join(m["command"] for m in metas),
                date=", ".join(sorted({m["date"][:10] for m in metas})))
    md = markdown([r for t in tasks for r in rows.get(t.name, [])], baselines, meta, tasks)
    print(md)
    if args.md and args.md != "-":
        Path(args.md).write_text(md)
        print(f"markdown written to {args.md}", file=sys.stderr)
    if args.json_path:
        merged = [r for t in tasks for r in rows.get(t.name, [])]
        args.json_path.write_text(json.dumps({"meta": meta, "baselines": baselines, "results": merged},
                                             indent=2) + "\n")
        print(f"JSON written to {args.json_path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", default="cpu", choices=("cpu", "gpu"),
                    help="cpu: small preset, up to 60 min of training a task; gpu: base preset, minutes")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"subset of {','.join(TASKS)}")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "quality", help="[runs/quality]")
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data", help="[../shared/data]")
    ap.add_argument("--preset", default=None, help="override the budget's preset (small on cpu, base on gpu)")
    ap.add_argument("--time", default=None, help="override every task's --time-budget (e.g. 5m)")
    ap.add_argument("--device", default=None, help="passed to attn train/eval [attn's default: auto]")
    ap.add_argument("--train-args", default="", help="extra options appended to every attn train command")
    ap.add_argument("--reuse", action="store_true", help="skip training where RUN_DIR/model.safetensors exists")
    ap.add_argument("--run", action="append", default=[], metavar="TASK=DIR",
                    help="evaluate this earlier run directory for TASK instead of training one; the table "
                         "shows the attn train command rebuilt from its saved configuration (repeatable)")
    ap.add_argument("--pretrain", type=float, default=0.0, metavar="SHARE",
                    help="sst2, imdb, dialogsum: spend SHARE of the time budget on `attn pretrain` with the "
                         "task's docs/recipes/*-pretrain-cpu.toml on its training texts, then fine-tune with "
                         "--init-from and its *-small-cpu.toml for the rest (benchmarks/pretrain_gain.py's "
                         "pipeline, seed 1) [0: train from scratch with the options above]")
    ap.add_argument("--no-baselines", action="store_true", help="skip TF-IDF and lead-3")
    ap.add_argument("--baselines-only", action="store_true", help="compute only the baselines")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    ap.add_argument("--report", nargs="+", type=Path, default=None, metavar="JSON",
                    help="run nothing: merge the results JSON files of earlier runs of this script "
                         "(later files win per task) and write one table for --tasks")
    ap.add_argument("--md", default=None, help="markdown table to write, '-' to print only "
                    "[docs/benchmarks-quality.md; with --baselines-only: print only]")
    ap.add_argument("--json", dest="json_path", type=Path, default=None,
                    help="results JSON [RUNS_DIR/quality-BUDGET.json]")
    args = ap.parse_args(argv)
    args.runs_dir, args.data_root = args.runs_dir.resolve(), args.data_root.resolve()
    names = args.tasks.split(",")
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        ap.error(f"unknown task(s) {', '.join(unknown)} (choose from {', '.join(TASKS)})")
    tasks = [TASKS[n] for n in names]
    if not 0 <= args.pretrain < 1:
        ap.error("--pretrain SHARE must be in [0, 1), e.g. 0.5")
    if args.pretrain:
        import pretrain_gain  # here: only --pretrain needs it

        no_recipe = [n for n in names if n not in pretrain_gain.SETUPS]
        if no_recipe:
            ap.error(f"--pretrain: no pretraining recipe for {', '.join(no_recipe)} "
                     f"(choose from {', '.join(pretrain_gain.SETUPS)})")
    args.runs = {}
    for item in args.run:
        name, _, path = item.partition("=")
        if name not in TASKS or not path or not (Path(path) / "train_config.json").is_file():
            ap.error(f"--run {item}: expected TASK=RUN_DIR with TASK in {','.join(TASKS)} and "
                     "RUN_DIR an attn run directory")
        args.runs[name] = Path(path).resolve()

    if args.report:
        return report(args, tasks)
    if args.dry_run:
        for t in tasks:
            run_dir = args.runs_dir / f"{t.name}-{args.budget}"
            print(f"# {t.dataset}")
            if not args.baselines_only:
                if args.pretrain:
                    import pretrain_gain

                    steps = pretrain_pipeline(t, args, Path("PRETRAIN_TEXT"))
                    run_dir = pretrain_gain.run_dir_of(steps)
                else:
                    steps = [(train_command(t, args, run_dir), None)]
                for cmd, _ in steps:
                    print(shlex.join(cmd))
                for ev in t.evals:
                    if ev.data.startswith("{runs}/_flores"):
                        print(f"# link {args.runs_dir}/_flores/flores101.devtest.{{it,en}} -> "
                              f"{args.data_root}/translation/tatoeba-it-en/flores101.devtest.{{ita,eng}}")
                    print(shlex.join(eval_command(t, ev, args, run_dir)))
            if t.baseline and not args.no_baselines:
                print(f"# baseline: {t.baseline} on {t.train[1].format(data=args.data_root)} (test)")
        return 0

    import torch

    import attn_cli

    args.runs_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    baselines: dict[str, dict] = {}
    if not args.no_baselines:
        for t in tasks:
            if t.baseline:
                print(f"[{t.name}] baseline {t.baseline}", file=sys.stderr, flush=True)
                baselines[t.name] = run_baseline(t, args.data_root)
                print(f"[{t.name}] {json.dumps(baselines[t.name])}", file=sys.stderr, flush=True)
    rows: list[dict] = []
    if not args.baselines_only:
        for t in tasks:
            rows += run_task(t, args)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "budget": args.budget,
            "hardware": hardware(args.device), "torch": torch.__version__, "attn": attn_cli.__version__,
            "command": shlex.join(["python", "benchmarks/quality.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
            "wall_s": round(time.time() - started, 1)}
    json_path = args.json_path or args.runs_dir / f"quality-{args.budget}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"meta": meta, "baselines": baselines, "results": rows}, indent=2) + "\n")
    md = markdown(rows, baselines, meta, tasks)
    print(md)
    md_path = args.md or ("-" if args.baselines_only else str(ROOT / "docs" / "benchmarks-quality.md"))
    if md_path != "-":
        Path(md_path).parent.mkdir(parents=True, exist_ok=True)
        Path(md_path).write_text(md)
        print(f"markdown written to {md_path}", file=sys.stderr)
    print(f"JSON written to {json_path}", file=sys.stderr)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
