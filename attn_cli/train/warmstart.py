"""Warm starts and resumes: the shape a run must have to take another run's weights
(--init-from) or its own (--resume), and the copying of those weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from attn_cli import rundir as ckpt
from attn_cli.config import AUTO, PRESETS, ModelConfig, TrainConfig
from attn_cli.errors import AttnError


PRESET_SHAPE = ("d_model", "n_heads", "n_enc_layers", "d_ff")  # what a preset sets (and decoder layers)


def init_preset(init_from: Path | None, resume: bool, adopt: bool, cfg: TrainConfig) -> TrainConfig:
    """--init-from on a new run. Without --preset (``adopt``), or with --preset auto: the shape of
    the run it starts from, so that its weights fit (its preset when it had a named one). With a
    named preset given, one that does not fit is refused now, before the data is read
    (init_weights checks the model built)."""
    if init_from is None or resume:
        return cfg
    path = init_from / ckpt.CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        model, preset = meta["model"], meta.get("preset")
        if preset not in PRESETS:  # (auto, or a run of an older attn)
            preset = next((n for n, p in PRESETS.items() if all(p[k] == model[k] for k in PRESET_SHAPE)), None)
        shape = {k: model[k] for k in PRESET_SHAPE}
        if model.get("n_dec_layers") and cfg.task != "sentiment":
            shape["n_dec_layers"] = model["n_dec_layers"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AttnError(f"--init-from {init_from}: {path} is damaged ({e})",
                        "pass the --out directory of an earlier attn train") from None
    if adopt or cfg.preset == AUTO:
        return dataclasses.replace(cfg, preset=preset or AUTO, **train_shape(model))
    for name, old in shape.items():
        if old != PRESETS[cfg.preset][name]:
            raise init_misfit(init_from, name, old, PRESETS[cfg.preset][name], preset)
    return cfg


def init_misfit(run_dir: Path, name: str, old, new, preset: str | None) -> AttnError:
    return AttnError(f"cannot initialise from {run_dir}: its {name} is {old!r}, this run's {new!r}",
                     f"leave out --preset: its own, {preset}, is used" if preset else
                     "leave out --preset, or pass the one it was trained with: attn info shows it")


TRAINING_ONLY = ("dropout",)  # model fields that may change on --resume
# --init-from: fields that shape the shared weights; max_len and num_labels may differ
INIT_SAME = ("vocab_size", "tgt_vocab_size", "d_model", "n_heads", "n_enc_layers", "n_dec_layers",
             "d_ff", "tie_embeddings")
ENCODER_SAME = ("vocab_size", "d_model", "n_heads", "n_enc_layers", "d_ff")  # seq2seq -> classifier


def check_same_model(out: Path, mcfg: ModelConfig) -> None:
    """--resume must rebuild the model the run was trained as: an option that changes the
    architecture (--preset, --max-len, ...) would otherwise load the weights into a
    different model and leave config.json describing the old one."""
    try:
        saved = ModelConfig.from_dict(json.loads((out / ckpt.CONFIG_FILE).read_text())["model"])
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise AttnError(f"{out / ckpt.CONFIG_FILE} is damaged ({e})", "restore it, or start a new run") from None
    for name, old in saved.to_dict().items():
        new = getattr(mcfg, name)
        if name not in TRAINING_ONLY and new != old:
            raise AttnError(f"cannot resume {out} as a different model: {name} was {old!r}, now {new!r}",
                            f"resume without the option that sets {name}, or start a new run")


def init_weights(model: torch.nn.Module, mcfg: ModelConfig, run_dir: Path) -> str:
    """--init-from: copy the best weights of another run into ``model`` (a warm start: optimizer,
    schedule and step begin afresh). Tensors of the same name and shape are copied; the rest
    (a classifier head for other labels) keep their fresh values.
    A classifier may start from an encoder-decoder: its source embedding and encoder are copied.
    Returns a one-line note of what was copied."""
    from attn_cli.infer.runs import load_run

    source = load_run(run_dir, device="cpu", allow_pretrain=True)
    old = source.model_cfg
    given = source.model.state_dict()
    encoder_only = old.is_seq2seq and not mcfg.is_seq2seq
    if encoder_only:  # Seq2Seq's source embedding and encoder, under Classifier's names
        given = {("embed.weight" if n == "src_embed.weight" else n): t for n, t in given.items()
                 if n == "src_embed.weight" or n.startswith("encoder.")}
    elif old.is_seq2seq != mcfg.is_seq2seq:
        raise AttnError(f"cannot initialise a {mcfg.task} model from {run_dir}, a {old.task} model "
                        "(it has no decoder)", "pass a translate or summarize run, or leave out --init-from")
    for name in ENCODER_SAME if encoder_only else INIT_SAME:
        if getattr(old, name) != getattr(mcfg, name):
            raise init_misfit(run_dir, name, getattr(old, name), getattr(mcfg, name), source.meta.get("preset"))
    state = model.state_dict()
    copied = {n: given[n] for n, t in state.items() if n in given and given[n].shape == t.shape}
    model.load_state_dict({**state, **copied})
    fresh = [n for n in state if n not in copied]
    return (f"initialised {len(copied)} of {len(state)} weight tensors from {run_dir}"
            + (f" ({old.task} encoder)" if encoder_only else "")
            + (f"; new: {', '.join(fresh)}" if fresh else ""))


def train_shape(model: dict) -> dict:
    """A saved model's dims (config.json's ``model``) as TrainConfig's dimension fields."""
    return {"d_model": model["d_model"], "n_heads": model["n_heads"], "n_layers": model["n_enc_layers"],
            "d_ff": model["d_ff"]}


def resumed_shape(out: Path, cfg: TrainConfig) -> TrainConfig:
    """--resume of a --preset auto run whose config does not carry its dims (a library caller's
    fresh TrainConfig): the shape in the run's config.json, never a new probe's."""
    if cfg.preset != AUTO or len(cfg.shape()) >= 4:
        return cfg
    try:
        saved = train_shape(json.loads((out / ckpt.CONFIG_FILE).read_text(encoding="utf-8"))["model"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AttnError(f"{out / ckpt.CONFIG_FILE} is damaged ({e})", "restore it, or start a new run") from None
    return dataclasses.replace(cfg, **{k: v if getattr(cfg, k) is None else getattr(cfg, k) for k, v in saved.items()})
