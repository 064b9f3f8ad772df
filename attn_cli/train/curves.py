"""`attn info RUN --plot curves.png`: a run's training curves from its metrics.jsonl, without
TensorBoard. Two panels (against steps, and against training time): the training loss on the
left axis, the validation metric on the right one, and the baseline as a dashed line."""

from __future__ import annotations

import json
import os
from pathlib import Path

from attn_cli import rundir as ckpt
from attn_cli.errors import AttnError
from attn_cli.eval.metrics import PRETRAIN_METRIC, PRIMARY_METRIC

CURVES_FILE = "curves.png"  # the name the model card links when it is in the run directory


def read_curves(run_dir: Path, task: str, pretraining: bool) -> dict:
    """{"metric", "train": [(step, minutes, loss)], "valid": [(step, minutes, value)], "baseline"}."""
    path = run_dir / ckpt.METRICS_FILE
    try:
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    except (OSError, ValueError) as e:
        raise AttnError(f"cannot read {path}: {e}", "the run has no training records to plot") from None
    metric = PRETRAIN_METRIC[task] if pretraining else PRIMARY_METRIC[task]
    train = [(r["step"], r.get("elapsed", 0.0) / 60, r["loss"]) for r in rows if r.get("event") == "train"]
    valid = [(r["step"], 0.0, r[metric]) for r in rows if r.get("event") == "eval" and metric in r]
    if train:  # an evaluation's time: the training time of the nearest logged step before it
        valid = [(s, max((m for t, m, _ in train if t <= s), default=0.0), v) for s, _, v in valid]
    base = next((r.get(metric) for r in reversed(rows) if r.get("event") == "baseline"), None)
    if not train and not valid:
        raise AttnError(f"{path} holds no training or validation rows yet", "plot it after some steps")
    return {"metric": metric, "train": train, "valid": valid, "baseline": base}


def plot_curves(curves: dict, path: str | os.PathLike, title: str) -> None:
    """Save the two panels as a PNG at ``path`` (atomically)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise AttnError("--plot needs matplotlib", "pip install 'attn[plot]'") from None
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    for i, (axis, label) in enumerate(((0, "step"), (1, "training time (min)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        if curves["train"]:
            ax.plot([p[axis] for p in curves["train"]], [p[2] for p in curves["train"]], color="tab:blue",
                    label="training loss")
        ax.set_xlabel(label)
        ax.set_ylabel("training loss", color="tab:blue")
        right = ax.twinx()
        if curves["valid"]:
            right.plot([p[axis] for p in curves["valid"]], [p[2] for p in curves["valid"]], "o-", color="tab:red",
                       label=f"validation {curves['metric']}")
        if curves["baseline"] is not None:
            right.axhline(curves["baseline"], color="tab:gray", linestyle="--", label="baseline")
        right.set_ylabel(f"validation {curves['metric']}", color="tab:red")
        if i == 0:
            lines = ax.get_legend_handles_labels()
            more = right.get_legend_handles_labels()
            ax.legend(lines[0] + more[0], lines[1] + more[1], loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
