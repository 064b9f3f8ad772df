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
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from baselines import lead3_baseline, tfidf_baseline
from quality_report import hardware, markdown, report
from quality_runs import ROOT, eval_command, pretrain_pipeline, run_task, train_command
from quality_runs import attn_cmd, recorded_command, run_logged  # noqa: F401  (epoch_time.py, tests import them)
from quality_tasks import TASKS, Task


# ------------------------------------------------------------------------------ baselines


def run_baseline(task: Task, data_root: Path) -> dict:
    """The task's in-run baseline (TF-IDF + LR or lead-3) on its test split."""
    directory = Path(task.train[1].format(data=data_root))
    return tfidf_baseline(directory) if task.baseline == "tfidf" else lead3_baseline(directory)


def parser() -> argparse.ArgumentParser:
    """The command line."""
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
    return ap


def checked_tasks(ap: argparse.ArgumentParser, args: argparse.Namespace) -> list[Task]:
    """The --tasks asked for; resolves the directories and sets ``args.runs`` (--run TASK=DIR).
    A usage error on unknown tasks, a --pretrain share or task without a recipe, a bad --run."""
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
    return tasks


def dry_run(args: argparse.Namespace, tasks: list[Task]) -> int:
    """--dry-run: print every command (and link, and baseline) a run would make; run nothing."""
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


def compute_baselines(args: argparse.Namespace, tasks: list[Task]) -> dict[str, dict]:
    """The in-run baseline of each task that has one (none with --no-baselines), by task name."""
    baselines: dict[str, dict] = {}
    if not args.no_baselines:
        for t in tasks:
            if t.baseline:
                print(f"[{t.name}] baseline {t.baseline}", file=sys.stderr, flush=True)
                baselines[t.name] = run_baseline(t, args.data_root)
                print(f"[{t.name}] {json.dumps(baselines[t.name])}", file=sys.stderr, flush=True)
    return baselines


def write_results(args: argparse.Namespace, meta: dict, baselines: dict, rows: list[dict],
                  tasks: list[Task]) -> None:
    """The results JSON, and the markdown table printed and written (--md; '-': printed only)."""
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


def main(argv: list[str] | None = None) -> int:
    """Run the suite (or --report, or --dry-run); 1 if a training or an evaluation failed."""
    ap = parser()
    args = ap.parse_args(argv)
    tasks = checked_tasks(ap, args)
    if args.report:
        return report(args, tasks)
    if args.dry_run:
        return dry_run(args, tasks)

    import torch

    import attn_cli

    args.runs_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    baselines = compute_baselines(args, tasks)
    rows: list[dict] = []
    if not args.baselines_only:
        for t in tasks:
            rows += run_task(t, args)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "budget": args.budget,
            "hardware": hardware(args.device), "torch": torch.__version__, "attn": attn_cli.__version__,
            "command": shlex.join(["python", "benchmarks/quality.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
            "wall_s": round(time.time() - started, 1)}
    write_results(args, meta, baselines, rows, tasks)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
