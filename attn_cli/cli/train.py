"""`attn train TASK`: options -> TrainConfig (defaults < --config TOML < options), progress and
tables on stderr, the run directory on disk."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Annotated

import tomllib
import typer
from rich.markup import escape
from rich.table import Table

from attn_cli.cli import console as ui
from attn_cli.cli.app import AttnCommand, app, command, flag
from attn_cli.cli.reporter import RichReporter
from attn_cli.cli.options import (
    HW,
    OPT,
    RUN,
    STOP,
    AccumOpt,
    ConfigOpt,
    DataCacheOpt,
    DataOpt,
    DffOpt,
    DModelOpt,
    HeadsOpt,
    LayersOpt,
    DropoutOpt,
    EpochsOpt,
    EvalEveryOpt,
    LabelFieldOpt,
    LowercaseOpt,
    LrOpt,
    MaxLenOpt,
    MaxStepsOpt,
    MaxTokensOpt,
    OverwriteOpt,
    PrecisionOpt,
    PresetOpt,
    ResumeOpt,
    RunDeviceOpt,
    SaveEveryOpt,
    SeedOpt,
    SplitOpt,
    SrcFieldOpt,
    SrcOpt,
    SubsetOpt,
    TextFieldOpt,
    TgtFieldOpt,
    TgtOpt,
    TimeBudgetOpt,
    TokenizerOpt,
    VocabSizeOpt,
    WarmupOpt,
    make_fields,
)
from attn_cli.config import TrainConfig
from attn_cli.errors import AttnError

EXPERT = "Expert (the defaults suit most runs)"


def parse_duration(text: str | None) -> float | None:
    """'90s', '15m', '1h30m', '2h' or plain seconds -> seconds."""
    if text is None:
        return None
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    if not parts or not any(parts.groups()):
        raise AttnError(f"cannot read the duration '{text}'", "write e.g. 90s, 15m, 1h30m")
    h, m, s = (float(x) if x else 0.0 for x in parts.groups())
    return h * 3600 + m * 60 + s


def load_toml(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AttnError(f"config file {path} not found", "check --config") from None
    except OSError as e:
        raise AttnError(f"cannot read config file {path}: {e.strerror or e}", "give a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise AttnError(f"{path} is not valid TOML: {e}", "fix the file") from None
    return {k.replace("-", "_"): v for k, v in raw.items()}


def read_json(path: Path) -> dict | None:
    """A run's JSON file as a dict (None if absent); damage is a one-line error naming it."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise AttnError(f"{path} is damaged: {e}", "restore it, or start a new run") from None
    if not isinstance(value, dict):
        raise AttnError(f"{path} is damaged: not a JSON object", "restore it, or start a new run")
    return value


# train_config.json keys of earlier versions and the value that meant "off": a run saved with
# one of them off still resumes; one that used it cannot be continued the same way.
REMOVED_OPTIONS = {"subword_sampling": 0.0, "sam": 0.0, "mixup": 0.0, "token_dropout": 0.0, "mlm_steps": 0,
                   "attn_dropout": None, "pooling": "mean", "positions": "sinusoidal"}


def resolve_config(task: str, options: dict, toml: dict, saved: dict | None):
    """TrainConfig from the saved run (resume) or defaults, then the TOML file, then options."""
    from attn_cli.config import TrainConfig

    merged = dict(saved or {"task": task})
    if saved is not None:
        merged.setdefault("concat", 0.0)  # runs saved before --concat trained on single pairs
    for removed, off in REMOVED_OPTIONS.items():  # runs saved by earlier versions
        if merged.get(removed, off) not in (off, 0, None):
            raise AttnError(f"the run to resume was trained with {removed}={merged[removed]!r}, an option "
                            "this version of attn no longer has", "start a new run (without --resume)")
        merged.pop(removed, None)
    if "time_budget" in toml and isinstance(toml["time_budget"], str):
        toml["time_budget"] = parse_duration(toml["time_budget"])
    merged.update(toml)
    merged.update({k: v for k, v in options.items() if v is not None})
    merged["task"] = task
    if saved and saved.get("task") != task:
        raise AttnError(f"the run to resume is a {saved.get('task')} run, not {task}",
                        f"use attn train {saved.get('task')}")
    try:
        return TrainConfig.from_dict(merged)
    except (ValueError, TypeError) as e:
        raise AttnError(f"bad option: {e}", "see attn train --help") from None


WARMUP_SHARE = 0.1  # a short run's default warmup: at most this share of its --max-steps


def short_run_warmup(cfg):
    """(config, note or None): the default warmup capped to a tenth of --max-steps, so that a
    short run reaches its peak learning rate (300 steps with 800 of warmup never would), or for
    a --time-budget run to a tenth of the steps the budget allows, measured after the first
    steps (Trainer). Saved in train_config.json, so a resume keeps the same schedule; an explicit
    --warmup is kept. The note goes to RunRequest.notes, shown once the data is checked."""
    import dataclasses

    if cfg.max_steps is None:  # a --time-budget run: capped once its speed is known
        return (dataclasses.replace(cfg, warmup_share=WARMUP_SHARE) if cfg.time_budget else cfg), None
    if cfg.warmup <= cfg.max_steps * WARMUP_SHARE:
        return cfg, None
    capped = max(1, int(cfg.max_steps * WARMUP_SHARE))
    note = (f"warmup: {capped} steps (the default {cfg.warmup} is more than a tenth of --max-steps "
            f"{cfg.max_steps}; --warmup N sets it)")
    return dataclasses.replace(cfg, warmup=capped), note


@app.command(cls=AttnCommand, epilog="Examples:  attn train translate --data data/translate.it-en.jsonl --src it "
             "--tgt en --out runs/it-en --preset tiny --max-steps 800  ·  attn train sentiment "
             "--data ../shared/data/sentiment/sst2 --out runs/sst2 --time-budget 15m  ·  "
             "torchrun --nproc-per-node 4 -m attn_cli train translate ... (multi-GPU)")
@command
def train(
    task: Annotated[str, typer.Argument(help="translate, summarize or sentiment.", show_default=False)],
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", rich_help_panel=RUN, show_default=False,
                                      help="Run directory to create (or resume).")],
    valid: Annotated[str | None, typer.Option("--valid", rich_help_panel="Data", show_default=(
        "the data's validation split, else held out of train: sentiment 5%, at least 2,000 and at most "
        "20%; translate/summarize 1%, at most 2,000 (under 1,000 examples: 200 training examples "
        "reused)"), help="Validation SPEC.")] = None,
    src: SrcOpt = None, tgt: TgtOpt = None, src_field: SrcFieldOpt = None, tgt_field: TgtFieldOpt = None,
    text_field: TextFieldOpt = None, label_field: LabelFieldOpt = None, subset: SubsetOpt = None,
    num_labels: Annotated[int | None, typer.Option("--num-labels", rich_help_panel="Data", min=2, metavar="<int>",
                                                   show_default=False, help=(
        "sentiment: keep integer labels as the classes 0..K-1 (some may be absent from the data); "
        "without it, integer labels that are not 0..K-1 (stars 1 and 5) are named classes in "
        "sorted order."))] = None,
    split: SplitOpt = "train",
    data_cache: DataCacheOpt = None,
    num_proc: Annotated[int | None, typer.Option("--num-proc", rich_help_panel="Data", min=1, metavar="<int>",
                                                 show_default="the machine's cores", help=(
        "Processes that tokenize data the cache does not hold yet."))] = None,
    stream: Annotated[bool | None, flag("--stream", rich_help_panel="Data", show_default=False, help=(
        "Read, tokenize and batch the training data while training instead of caching it "
        "(for corpora larger than the disk, or Hub datasets); needs --tokenizer and --valid "
        "(or a validation split)."))] = None,
    shuffle_buffer: Annotated[int | None, typer.Option("--shuffle-buffer", rich_help_panel="Data",
                                                       show_default=str(TrainConfig.shuffle_buffer), help=(
        "--stream: rows read, shuffled and length-bucketed together; more mixes better and "
        "costs memory."))] = None,
    concat: Annotated[float | None, typer.Option("--concat", rich_help_panel="Data",
                                                 metavar="<share>", show_default="0 = off", help=(
        "Share of training examples made of 2-3 pairs joined end to end (source to source, target "
        "to target), so the model also learns inputs longer than single sentences; 0 = off. "
        "Drawn anew each epoch; every pair is still seen once an epoch; never longer than "
        "--max-len; validation is never joined. Not for sentiment."))] = None,
    config: ConfigOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    tokenizer: TokenizerOpt = None,
    init_from: Annotated[Path | None, typer.Option("--init-from", rich_help_panel=RUN, help=(
        "Start from the best weights of this earlier run directory (a warm start: fine-tune it "
        "on this data) with its tokenizer and its shape (unless a named --preset is given). A classifier head "
        "for a different number of labels starts fresh; a sentiment run may start from the encoder "
        "of a translate or summarize run."))] = None,
    vocab_size: VocabSizeOpt = None,
    lowercase: LowercaseOpt = None,
    preset: PresetOpt = None,
    d_model: DModelOpt = None,
    layers: LayersOpt = None,
    heads: HeadsOpt = None,
    d_ff: DffOpt = None,
    dropout: DropoutOpt = None,
    max_len: MaxLenOpt = None,
    max_tokens: MaxTokensOpt = None,
    accum: AccumOpt = None,
    lr: LrOpt = None,
    warmup: WarmupOpt = None,
    ema: Annotated[float | None, typer.Option("--ema", rich_help_panel=OPT, show_default="0 = off", help=(
        "Evaluate and keep an exponential moving average of the weights with this decay, "
        "e.g. 0.999."))] = None,
    seed: SeedOpt = None,
    time_budget: TimeBudgetOpt = None,
    max_steps: MaxStepsOpt = None,
    epochs: EpochsOpt = None,
    patience: Annotated[int | None, typer.Option("--patience", rich_help_panel=STOP,
                                                 show_default=str(TrainConfig.patience), help=(
        "Stop after N evaluations without improvement, 0 = never."))] = None,
    eval_every: EvalEveryOpt = None,
    save_every: SaveEveryOpt = None,
    device: RunDeviceOpt = None,
    precision: PrecisionOpt = None,
    compile: Annotated[bool | None, flag("--compile", rich_help_panel=HW, show_default=False,
                                         help="torch.compile the model.")] = None,
    nproc: Annotated[int | None, typer.Option("--nproc", rich_help_panel=HW, help=(
        "Launch N processes on this machine through torch.distributed.run (DDP)."))] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", rich_help_panel=EXPERT,
                                                 show_default=TrainConfig.schedule, help=(
        "auto = linear decay to zero at the end of --max-steps or --time-budget (inverse_sqrt "
        "without one); linear, cosine (both need one of those) or inverse_sqrt."))] = None,
    label_smoothing: Annotated[float | None, typer.Option(
        "--label-smoothing", rich_help_panel=EXPERT, show_default="0.1 for translate/summarize, 0 for sentiment",
        help="Label smoothing of the loss.")] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", rich_help_panel=EXPERT,
                                                       show_default=str(TrainConfig.weight_decay),
                                                       help="AdamW weight decay.")] = None,
    clip: Annotated[float | None, typer.Option("--clip", rich_help_panel=EXPERT, show_default=str(TrainConfig.clip),
                                               help="Gradient-norm clipping, 0 = off.")] = None,
    skip_nonfinite: Annotated[bool | None, flag("--skip-nonfinite", rich_help_panel=EXPERT, help=(
        "Skip batches with a NaN/inf loss instead of stopping."), show_default=False)] = None,
    eval_samples: Annotated[int | None, typer.Option("--eval-samples", rich_help_panel=EXPERT,
                                                     show_default=str(TrainConfig.eval_samples), help=(
        "Validation examples decoded for BLEU/ROUGE per evaluation."))] = None,
    tensorboard: Annotated[bool | None, flag("--tensorboard", rich_help_panel=RUN, show_default=False, help=(
        "Also write the training and validation curves as TensorBoard events (needs the tensorboard "
        "extra: pip install 'attn\\[tensorboard]'); view them with tensorboard --logdir RUN_DIR."))] = None,
    tensorboard_dir: Annotated[str | None, typer.Option("--tensorboard-dir", rich_help_panel=RUN,
                                                        show_default="RUN_DIR/tensorboard", help=(
        "Where --tensorboard writes (implies --tensorboard)."))] = None,
    log_every: Annotated[int | None, typer.Option("--log-every", rich_help_panel=EXPERT,
                                                  show_default=str(TrainConfig.log_every), help=(
        "Steps between lines in metrics.jsonl."))] = None,
) -> None:
    """Train a transformer on your data and write a self-contained run directory."""
    from attn_cli.rundir import TRAIN_CONFIG_FILE
    from attn_cli.train.setup import RunRequest

    if nproc is not None and nproc > 1:
        return launch(nproc)
    options = dict(preset=preset, d_model=d_model, n_layers=layers, n_heads=heads, d_ff=d_ff, dropout=dropout,
                   max_len=max_len, max_tokens=max_tokens, accum=accum,
                   lr=lr, warmup=warmup, schedule=schedule, label_smoothing=label_smoothing,
                   weight_decay=weight_decay, clip=clip, ema=ema, seed=seed, skip_nonfinite=skip_nonfinite,
                   time_budget=parse_duration(time_budget), max_steps=max_steps, epochs=epochs,
                   patience=patience, eval_every=eval_every, eval_samples=eval_samples,
                   save_every=parse_duration(save_every),
                   log_every=log_every, device=device, precision=precision, compile=compile,
                   tensorboard=True if tensorboard or tensorboard_dir else None, tensorboard_dir=tensorboard_dir,
                   vocab_size=vocab_size, lowercase=lowercase, stream=stream, shuffle_buffer=shuffle_buffer,
                   concat=concat)
    saved, fields = None, make_fields(src, tgt, src_field, tgt_field, text_field, label_field)
    if num_labels is not None:
        if task != "sentiment":
            raise AttnError(f"--num-labels is for sentiment, not {task}", "leave it out")
        fields.num_labels = num_labels
    if resume:
        saved = read_json(out / TRAIN_CONFIG_FILE)
        meta = read_json(out / "config.json") or {}
        given = {k: v for k, v in fields.__dict__.items() if v is not None}
        fields = type(fields)(**{**meta.get("fields", {}), **given})  # the run's own field names
        valid = valid or (meta.get("data") or {}).get("valid")
    toml = load_toml(config)
    cfg = resolve_config(task, options, toml, saved)
    note = None
    if saved is None and "warmup" not in toml and warmup is None:
        cfg, note = short_run_warmup(cfg)
    req = RunRequest(data=data, out=out, valid=valid, subset=subset, split=split, tokenizer=tokenizer,
                     init_from=init_from, adopt_init_preset=preset is None and "preset" not in toml,
                     notes=[note] if note else [], resume=resume, overwrite=overwrite, fields=fields,
                     data_cache=data_cache, num_proc=num_proc)
    result = run_with_progress(req, cfg, "train", "ex" if task == "sentiment" and not cfg.objective else "tok")
    if ui.is_main_process():
        _summary(result, cfg)


def run_with_progress(req, cfg, command_name: str, unit: str):
    """train_run (attn_cli.train.setup) under a progress bar; Ctrl-C prints the command that resumes."""
    from attn_cli.train.setup import train_run
    from attn_cli.train.trainer import Interrupted

    with ui.progress(total_known=cfg.max_steps is not None) as bar:
        reporter = RichReporter(bar, cfg.max_steps, cfg.log_every, unit)
        try:
            return train_run(req, cfg, reporter)
        except Interrupted as e:
            again = shlex.join(["attn", command_name, cfg.task, "--data", req.data, "--out", str(req.out), "--resume"])
            ui.err.print(f"[yellow]Interrupted:[/] {escape(e.message)}. Resume with: {escape(again)}",
                         soft_wrap=True)
            raise typer.Exit(130) from None


def _summary(result, cfg) -> None:
    from attn_cli.data.rundata import REUSED
    from attn_cli.train.records import weak_hint
    from attn_cli.train.trainer import PRIMARY

    st = result.state
    table = Table(title=f"Training finished: {result.reason}", show_header=False, title_justify="left")
    table.add_row("run directory", str(result.run_dir))
    table.add_row("steps", f"{st['step']:,}")
    table.add_row("time", f"{st['train_seconds'] / 60:.1f} min")
    unit = "examples" if cfg.task == "sentiment" else "target tokens"
    table.add_row(unit + "/s", f"{st['tokens'] / max(st['train_seconds'], 1e-9):,.0f}")
    best = "n/a" if st["best"] is None else f"{st['best']:.4g}" + _standard_error(result.run_dir, st["best_step"])
    data = (read_json(result.run_dir / "config.json") or {}).get("data") or {}
    reused = f"; on {REUSED}" if data.get("valid_reused") else ""
    table.add_row(f"best validation {PRIMARY[cfg.task]}", f"{best} (step {st['best_step']}{reused})")
    base = getattr(result, "baseline", None)
    if base is not None:  # the same training and validation data (attn_cli.baselines)
        from attn_cli.eval.baselines import fit_note, verdict

        capped = base.get("fit_rows", 0) < base.get("train_rows", 0)
        model = "n/a" if st["best"] is None else f"{st['best']:.2f}"
        table.add_row(f"baseline ({base['name']})", f"{base[PRIMARY[cfg.task]]:.2f} vs model {model}"
                      + (f" ({fit_note(base)})" if capped else ""))
    table.add_row("parameters", f"{result.params:,}")
    ui.err.print(table)
    line = base is not None and verdict(cfg.task, base, st["best"])
    if line:
        ui.err.print(line[0].upper() + line[1:] + ".", markup=False)
    hint = not cfg.objective and weak_hint(cfg.task, st["best"], data.get("valid_majority"))
    if hint:
        ui.err.print(hint, markup=False)


def _standard_error(run_dir: Path, step: int) -> str:
    """' ± SE' of the best evaluation's accuracy (metrics.jsonl), or '' (other tasks, no record)."""
    try:
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    except (OSError, ValueError):
        return ""
    se = next((r.get("accuracy_se") for r in reversed(rows) if r.get("event") == "eval" and r.get("step") == step),
              None)
    return f" ± {se:.2g}" if se is not None else ""


def launch(nproc: int) -> None:
    """Re-run this command under torch.distributed.run with N local processes."""
    from torch.distributed.run import main as torchrun_main

    args = sys.argv[1:]
    i = next(i for i, a in enumerate(args) if a == "--nproc" or a.startswith("--nproc="))
    args = args[:i] + args[i + (1 if "=" in args[i] else 2):]
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        torchrun_main(["--nproc-per-node", str(nproc), "--module", "attn_cli", *args])
    except ChildFailedError as e:  # the failing rank has printed its own one-line error
        codes = [f.exitcode for f in e.failures.values()]
        raise typer.Exit(next((c for c in codes if c > 0), 1)) from None
