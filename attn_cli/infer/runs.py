"""Load a run directory for inference, and encode inputs for it.

Loading checks everything a stranger's run directory could get wrong: config.json fields and
types, the tokenizer's size, and every tensor of model.safetensors against the config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from attn_cli import rundir as ckpt
from attn_cli.config import ModelConfig
from attn_cli.data.tokenizer import Tokenizers
from attn_cli.errors import AttnError
from attn_cli.model.transformer import build_model

META_KEYS = {"attn_version": str, "task": str, "preset": str, "parameters": int, "model": dict,
             "label_names": (list, type(None)), "languages": dict, "fields": dict, "data": dict,
             "init_from": str,  # only in runs started with --init-from
             "pretrained": dict,  # ... when that run was an attn pretrain run: what it saw
             "auto": dict,  # only in --preset auto runs: the shape chosen and why (train.sizing)
             "pretrain": dict}  # only in attn pretrain runs (they initialise others, never infer)
# Inside the dicts above: what each value may be. Nothing in config.json is ever opened as a path
# (data.train/valid are shown by `attn info`, never read); every file comes from a fixed name.
# A dict's "*" covers the keys it does not name; keys added later are optional, so older runs load.
_STR = (str, type(None))
_NUM = (int, float, type(None))
META_VALUES = {"label_names": str, "languages": _STR, "fields": {"num_labels": int, "*": _STR},
               "auto": {"why": str, "*": _NUM}, "data": {
    "train": _STR, "valid": _STR, "subset": _STR, "train_examples": int, "valid_examples": int,
    "valid_reused": bool, "valid_majority": (float, int), "concat": (float, int)}}


@dataclass
class LoadedRun:
    path: Path
    meta: dict  # config.json
    model_cfg: ModelConfig
    model: torch.nn.Module
    toks: Tokenizers
    device: torch.device

    @property
    def task(self) -> str:
        return self.model_cfg.task


def read_meta(run_dir: Path) -> dict:
    """config.json, checked key by key (a wrong type or unknown key names the field)."""
    path = run_dir / ckpt.CONFIG_FILE
    if run_dir.exists() and not run_dir.is_dir():
        raise AttnError(f"model directory {run_dir} is a file, not a directory",
                        "pass a run directory made by attn train")
    if not run_dir.is_dir():
        raise AttnError(f"model directory {run_dir} does not exist", "pass a run directory made by attn train")
    if not path.is_file():
        raise AttnError(f"{run_dir} is not a model directory (no {ckpt.CONFIG_FILE})",
                        "pass a run directory made by attn train")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise AttnError(f"{path} is not valid JSON: {e}", "restore the file or retrain") from None
    except OSError as e:
        raise AttnError(f"cannot read {path}: {e.strerror or e}", "check its permissions") from None
    if not isinstance(meta, dict):
        raise AttnError(f"{path} must hold a JSON object", "restore the file or retrain")
    for key, value in meta.items():
        if key not in META_KEYS:
            raise AttnError(f"{path}: unknown field '{key}'", "remove it or retrain")
        if not isinstance(value, META_KEYS[key]):
            raise AttnError(f"{path}: field '{key}' has the wrong type ({type(value).__name__})",
                            "restore the file or retrain")
        _check_values(path, key, value)
    for key in ("task", "model"):
        if key not in meta:
            raise AttnError(f"{path}: missing field '{key}'", "restore the file or retrain")
    return meta


def _check_values(path: Path, key: str, value) -> None:
    """The values inside config.json's lists and dicts (see META_VALUES)."""
    want = META_VALUES.get(key)
    if want is None or value is None:
        return
    items = enumerate(value) if isinstance(value, list) else value.items()
    for name, item in items:
        kind = want.get(name, want.get("*")) if isinstance(want, dict) else want
        if kind is not None and (not isinstance(item, kind) or (isinstance(item, bool) and kind is not bool)):
            raise AttnError(f"{path}: field '{key}.{name}' has the wrong type ({type(item).__name__})",
                            "restore the file or retrain")


def load_run_files(run_dir: str | Path, task: str | None = None, allow_pretrain: bool = False
                   ) -> tuple[dict, ModelConfig, Tokenizers]:
    """config.json, the ModelConfig in it and the tokenizers, checked against each other. A
    pretraining run is refused unless ``allow_pretrain`` (--init-from reads it)."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if "pretrain" in meta and not allow_pretrain:
        what = meta["pretrain"].get("objective", "self-supervised")
        raise AttnError(f"{run_dir} is a pretraining run ({what}), not a trained {meta['task']} model",
                        f"fine-tune it first: attn train {meta['task']} --init-from {run_dir} --data SPEC "
                        "--out RUN_DIR")
    try:
        model_cfg = ModelConfig.from_dict(meta["model"])
    except (ValueError, TypeError) as e:
        raise AttnError(f"{run_dir / ckpt.CONFIG_FILE}: model.{str(e).removeprefix('ModelConfig.')}",
                        "the file is damaged; retrain or restore it") from None
    if task is not None and model_cfg.task != task:
        raise AttnError(f"{run_dir} is a {model_cfg.task} model, not a {task} model",
                        f"use attn {model_cfg.task} with it, or pass a {task} model")
    if model_cfg.task == "sentiment" and len(meta.get("label_names") or []) != model_cfg.num_labels:
        raise AttnError(f"{run_dir / ckpt.CONFIG_FILE}: label_names do not match model.num_labels",
                        "restore the file or retrain")
    toks = Tokenizers.load(run_dir)
    tgt_size = model_cfg.tgt_vocab_size or model_cfg.vocab_size
    if toks.src.vocab_size != model_cfg.vocab_size or (model_cfg.is_seq2seq and toks.tgt.vocab_size != tgt_size):
        raise AttnError(f"the tokenizer in {run_dir} has {toks.src.vocab_size} pieces but the model "
                        f"expects {model_cfg.vocab_size}", "the tokenizer and model do not belong together")
    return meta, model_cfg, toks


def load_run(run_dir: str | Path, *, task: str | None = None, device: str = "auto",
             allow_pretrain: bool = False) -> LoadedRun:
    """Rebuild the model of a run directory, with its best weights, ready for inference (or,
    with ``allow_pretrain``, to initialise another run)."""
    from attn_cli.device import pick_device

    run_dir = Path(run_dir)
    meta, model_cfg, toks = load_run_files(run_dir, task, allow_pretrain)
    if not (run_dir / ckpt.WEIGHTS_FILE).is_file():
        raise AttnError(f"{run_dir} has no {ckpt.WEIGHTS_FILE} yet", "train until the first evaluation")
    model = build_model(model_cfg)
    ckpt.load_weights(model, run_dir / ckpt.WEIGHTS_FILE)
    dev = pick_device(device)
    return LoadedRun(run_dir, meta, model_cfg, model.to(dev).eval(), toks, dev)


def encode_inputs(run: LoadedRun, texts: list[str]) -> tuple[list[list[int]], int]:
    """Token ids per text, cut to the model's positions; returns (ids, how many were cut)."""
    ids = run.toks.src.encode_batch(texts) if texts else []
    limit = run.model_cfg.max_len
    cut = sum(len(x) > limit for x in ids)
    return [x[:limit] for x in ids], cut
