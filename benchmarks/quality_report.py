"""The report of ``benchmarks/quality.py``: the markdown table of its results, and ``--report``,
which merges the results JSON files of earlier runs into one table."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from quality_tasks import Task


def hardware(device: str | None) -> str:
    """The GPU's name when one is used, else the CPU model and core count."""
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
    """The ``ours`` cell: an attn task's metrics from ``attn eval --json``, or a dash."""
    if not m:
        return "—"
    if task == "translate":
        return f"BLEU {m['bleu']:.1f} (chrF {m['chrf']:.1f})"
    if task == "sentiment":
        return f"acc {m['accuracy']:.1f} (F1 {m['macro_f1']:.1f})"
    return f"R-1/2/L {m['rouge1']:.1f}/{m['rouge2']:.1f}/{m['rougeL']:.1f}"


def fmt_baseline(b: dict | None) -> str:
    """The ``in-run baseline`` cell: TF-IDF + LR accuracy or lead-3 ROUGE, or a dash."""
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
    """Seconds as ``N s`` or ``N.N min``, or a dash."""
    if s is None:
        return "—"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def markdown(rows: list[dict], baselines: dict, meta: dict, tasks: list[Task]) -> str:
    """The markdown table: one line per (dataset, split) in ``tasks`` order, then the notes."""
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


def report(args: argparse.Namespace, tasks: list[Task]) -> int:
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
