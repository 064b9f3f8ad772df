"""A run's records besides its weights: metrics.jsonl (:class:`MetricsLog`), the README.md
model card (:func:`write_card`) and what an --init-from run says about its pretraining
(:func:`pretrained_summary`, for config.json and the card).
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import torch

from attn_cli import __version__
from attn_cli import rundir as ckpt
from attn_cli.config import TrainConfig
from attn_cli.data.rundata import RunData, describe_valid, joined_note
from attn_cli.errors import RunFailure
from attn_cli.eval.baselines import card_section
from attn_cli.eval.metrics import PRETRAIN_METRIC, PRIMARY_METRIC
from attn_cli.train.curves import CURVES_FILE


def pretrained_summary(run_dir: Path) -> dict | None:
    """What an --init-from run says about its pretraining (objective, texts, steps), or None
    when it is not a pretraining run."""
    try:
        meta = json.loads((run_dir / ckpt.CONFIG_FILE).read_text(encoding="utf-8"))
        info = meta.get("pretrain")
        if not isinstance(info, dict):
            return None
        state = json.loads((run_dir / ckpt.LAST_DIR / "state.json").read_text(encoding="utf-8")) \
            if (run_dir / ckpt.LAST_DIR / "state.json").is_file() else {}
    except (OSError, ValueError):
        return None
    return {"objective": str(info.get("objective")), "texts": int(info.get("texts") or 0),
            "data": str((meta.get("data") or {}).get("train")), "steps": int(state.get("step") or 0),
            "tokens_seen": int(state.get("tokens") or 0)}


class MetricsLog:
    """metrics.jsonl, one JSON object per line; on resume, lines after the resumed step go."""

    def __init__(self, path: Path, resume_step: int, enabled: bool, tensorboard=None):
        """``tensorboard``: a TensorBoardLog that gets every row too (--tensorboard)."""
        self.fh, self.tb = None, tensorboard
        if not enabled:
            return
        if path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and _step_of(line) <= resume_step]
            ckpt.atomic_write_text(path, "".join(line + "\n" for line in kept))
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, row: dict) -> None:
        if self.fh:
            try:
                self.fh.write(json.dumps({"time": round(time.time(), 3), **row}) + "\n")
                self.fh.flush()
            except OSError as e:
                raise RunFailure(f"could not write {self.fh.name}: {e.strerror or e}",
                                 "check free disk space; last/ holds the last saved state") from None
        if self.tb is not None:
            self.tb.write(row)

    def close(self) -> None:
        if self.fh:
            self.fh.close()
        if self.tb is not None:
            self.tb.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62


def write_card(out: Path, cfg: TrainConfig, data: RunData, params: int, state: dict,
               device: torch.device) -> None:
    """README.md: a short model card from the run's own records."""
    rows = [json.loads(x) for x in (out / ckpt.METRICS_FILE).read_text().splitlines() if x.strip()]
    primary = PRETRAIN_METRIC[cfg.task] if cfg.objective else PRIMARY_METRIC[cfg.task]
    evals = [r for r in rows if r.get("event") == "eval"]
    best = max(evals, key=lambda r: r[primary], default=None)
    metric_lines = "".join(f"| {k} | {v:.4g} |\n" for k, v in (best or {}).items()
                           if isinstance(v, float) and k not in ("time", "best"))
    meta = json.loads((out / ckpt.CONFIG_FILE).read_text())
    origin = ""
    if meta.get("init_from"):
        origin = f"- started from the best weights of `{meta['init_from']}` (--init-from)\n" + origin
    if meta.get("pretrained"):
        p = meta["pretrained"]
        origin += (f"- that run was pretrained ({p['objective']}) on `{p['data']}`: {p['texts']:,} texts, "
                   f"{p['steps']:,} steps, {p['tokens_seen']:,} tokens seen\n")
    run = shlex.quote(str(out))  # the run directory as given (runs/it-en), not its last part
    if cfg.objective:
        origin += (f"- a pretraining run ({cfg.objective}): fine-tune it with `attn train {cfg.task} "
                   f"--init-from {run} --data SPEC --out RUN_DIR`\n")
    d, m = meta["data"], meta["model"]
    text = (f"# attn {cfg.task} model\n\n"
            f"- preset: `{cfg.preset}` (d_model {m['d_model']}, heads {m['n_heads']}, layers "
            f"{m['n_enc_layers']}+{m['n_dec_layers']}, ffn {m['d_ff']}, max_len {m['max_len']}), "
            f"{params:,} parameters\n"
            f"- training data: `{d['train']}` "
            f"({'streamed' if cfg.stream else format(d['train_examples'], ',') + ' examples'}); "
            f"validation: {describe_valid(d)}{joined_note(d)}\n"
            f"- trained {state['step']:,} steps, {state['train_seconds'] / 60:.1f} min on {device}, "
            f"{state['tokens']:,} {'examples' if cfg.task == 'sentiment' else 'target tokens'}\n"
            f"{origin}"
            f"- attn {__version__}; weights in `model.safetensors` (best validation "
            f"{primary}, step {state['best_step']}"
            f"{f'; moving average of the weights, decay {cfg.ema}' if cfg.ema else ''})\n\n"
            f"## Validation metrics at the best step\n\n| metric | value |\n|---|---|\n{metric_lines}\n"
            f"Test metrics: run `attn eval --model {run} --data SPEC --split test`.\n")
    baselines = [r for r in rows if r.get("event") == "baseline"]
    if baselines:  # the last one: a resumed run appends its own
        text += "\n" + card_section(cfg.task, baselines[-1], best)
    if (out / CURVES_FILE).is_file():
        text += CURVES_LINK
    ckpt.atomic_write_text(out / ckpt.CARD_FILE, text)


CURVES_LINK = f"\n## Training curves\n\n![training loss and validation metric]({CURVES_FILE})\n"


def link_curves(out: Path) -> bool:
    """Add the curves picture to an existing model card (attn info --plot RUN/curves.png);
    False when the run has no card."""
    card = out / ckpt.CARD_FILE
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8")
    if CURVES_LINK not in text:
        ckpt.atomic_write_text(card, text + CURVES_LINK)
    return True


WEAK_BELOW = {"translate": 10.0, "summarize": 15.0}  # BLEU, ROUGE-1: still weak under these
MAJORITY_MARGIN = 5.0  # sentiment: weak within this many points of the commonest label's share


def weak_hint(task: str, best: float | None, majority: float | None) -> str | None:
    """A one-line hint when a finished run is still weak on its own validation data (BLEU under
    10, ROUGE-1 under 15, accuracy within 5 points of always answering the commonest label)."""
    if best is None:
        return None
    if task == "sentiment":
        if majority is None or best >= majority + MAJORITY_MARGIN:
            return None
        why = f"accuracy {best:.1f}, within {MAJORITY_MARGIN:g} points of the {majority:.1f} of always answering " \
              "the commonest label"
    else:
        limit = WEAK_BELOW[task]
        if best >= limit:
            return None
        why = f"{'BLEU' if task == 'translate' else 'ROUGE-1'} {best:.1f}, under {limit:g}"
    return (f"hint: the model is still weak on its validation data ({why}); more steps (--max-steps, "
            "--time-budget) and more data usually help")
