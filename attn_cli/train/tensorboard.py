"""--tensorboard: the rows of metrics.jsonl as TensorBoard scalars (rank 0 only).

Training rows give ``train/loss``, ``train/lr``, ``train/tokens_per_s`` (examples/s for
sentiment), ``train/pad_fraction``; evaluations give ``valid/<metric>`` for every number they
hold; the baseline is a constant line ``baseline/<metric>`` (drawn at step 0 and at the step it
was computed). A resumed run's writer purges the events after the step it resumed from, so no
step appears twice (TensorBoard's ``purge_step``).
"""

from __future__ import annotations

from pathlib import Path

from attn_cli.errors import AttnError

TRAIN_KEYS = ("loss", "lr", "tokens_per_s", "pad_fraction")
DEFAULT_DIR = "tensorboard"  # under the run directory


def require() -> None:
    """A one-line error now, before any work, when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise AttnError("--tensorboard needs the tensorboard package", "pip install 'attn[tensorboard]'") from None


def log_dir(run_dir: Path, given: str | None) -> Path:
    """--tensorboard-dir, else RUN_DIR/tensorboard."""
    return Path(given).expanduser() if given else run_dir / DEFAULT_DIR


class TensorBoardLog:
    """Writes metrics rows as scalars into ``directory``; ``resume_step`` > 0 purges later ones."""

    def __init__(self, directory: Path, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(directory), purge_step=resume_step + 1 if resume_step else None)

    def write(self, row: dict) -> None:
        event, step = row.get("event"), int(row.get("step", 0))
        if event == "train":
            for key in TRAIN_KEYS:
                if isinstance(row.get(key), (int, float)):
                    self.writer.add_scalar(f"train/{key}", row[key], step)
        elif event in ("eval", "baseline"):
            group = "valid" if event == "eval" else "baseline"
            for key, value in row.items():
                if key in ("step", "time", "event", "best") or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)):
                    if event == "baseline":
                        self.writer.add_scalar(f"{group}/{key}", value, 0)
                    self.writer.add_scalar(f"{group}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
