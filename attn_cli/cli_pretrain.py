"""`attn pretrain TASK`: self-supervised pretraining on unlabelled text, for `attn train TASK
--init-from RUN_DIR` to fine-tune (the loop, run directory and resume are attn train's)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from . import console as ui
from .cli_app import AttnCommand, app, command, flag
from .cli_options import DataOpt, SplitOpt, SrcFieldOpt, SrcOpt, SubsetOpt, TextFieldOpt, TgtFieldOpt, TgtOpt
from .cli_train import RichReporter, load_toml, make_fields, parse_duration, read_json, resolve_config, \
    short_run_warmup

RUN, MODEL, OPT, STOP, HW = "Run", "Model", "Optimisation", "When to stop", "Hardware"


@app.command(cls=AttnCommand, epilog="Examples:  attn pretrain sentiment --data reviews.txt --out runs/enc "
             "--time-budget 30m  ·  attn pretrain translate --data corpus/train --src de --tgt en "
             "--out runs/s2s  ·  then: attn train sentiment --data sst2/ --init-from runs/enc --out runs/sst2")
@command
def pretrain(
    task: Annotated[str, typer.Argument(help=(
        "The task the result will be fine-tuned for: sentiment (a masked-LM encoder), translate or "
        "summarize (a denoising encoder-decoder)."), show_default=False)],
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", rich_help_panel=RUN, show_default=False,
                                      help="Run directory to create (or resume).")],
    objective: Annotated[str | None, typer.Option("--objective", rich_help_panel=MODEL, help=(
        "sentiment: mlm (15% of pieces, 80/10/10) or mlm-whole-word; translate/summarize: denoise "
        "(BART text infilling: Poisson(3) spans over 30% of pieces) or denoise-permute (also "
        "shuffles sentences) (default: mlm / denoise)."))] = None,
    valid: Annotated[str | None, typer.Option("--valid", rich_help_panel="Data", help=(
        "Held-out text SPEC (default: the data's validation split, else 1% of it held out)."))] = None,
    documents: Annotated[bool | None, typer.Option(
        "--documents/--lines", rich_help_panel="Data", show_default=False, help=(
            "A .txt holds blank-line-separated documents / one text per line (default: detected)."))] = None,
    src: SrcOpt = None, tgt: TgtOpt = None, src_field: SrcFieldOpt = None, tgt_field: TgtFieldOpt = None,
    text_field: TextFieldOpt = None, subset: SubsetOpt = None, split: SplitOpt = "train",
    data_cache: Annotated[Path | None, typer.Option("--data-cache", rich_help_panel="Data", help=(
        "Directory of the tokenized-data cache (default: $ATTN_CACHE, else ~/.cache/attn)."))] = None,
    config: Annotated[Path | None, typer.Option("--config", rich_help_panel=RUN, help=(
        "TOML file whose keys are these options; options override it."))] = None,
    resume: Annotated[bool, flag("--resume", rich_help_panel=RUN, help=(
        "Continue the run in --out from last/ (same data order, noise and RNG)."))] = False,
    overwrite: Annotated[bool, flag("--overwrite", rich_help_panel=RUN, help="Replace a non-empty --out.")] = False,
    tokenizer: Annotated[Path | None, typer.Option("--tokenizer", rich_help_panel=RUN, help=(
        "Use this (joint) tokenizer directory (default: train one on the text)."))] = None,
    vocab_size: Annotated[int | None, typer.Option("--vocab-size", rich_help_panel=RUN, help=(
        "Size of the tokenizer trained when --tokenizer is not given (default: 8000)."))] = None,
    lowercase: Annotated[bool | None, flag("--lowercase", rich_help_panel=RUN, show_default=False, help=(
        "Have the tokenizer trained when --tokenizer is not given fold case."))] = None,
    preset: Annotated[str | None, typer.Option("--preset", rich_help_panel=MODEL, help=(
        "Model size: tiny, small, base or big (default: small); fine-tuning uses the same."))] = None,
    dropout: Annotated[float | None, typer.Option("--dropout", rich_help_panel=MODEL,
                                                  help="Dropout (default: 0.1).")] = None,
    max_len: Annotated[int | None, typer.Option("--max-len", rich_help_panel=MODEL, help=(
        "Pieces per text; longer texts are cut (default: 256)."))] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", rich_help_panel=OPT, help=(
        "Padded tokens per batch (all processes together) (default: 4096)."))] = None,
    accum: Annotated[int | None, typer.Option("--accum", rich_help_panel=OPT, help=(
        "Batches accumulated per optimizer step (default: 1)."))] = None,
    lr: Annotated[float | None, typer.Option("--lr", rich_help_panel=OPT, help="Peak learning rate (default: 7e-4).")
                  ] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", rich_help_panel=OPT, help=(
        "Warmup steps (default: 800, at most a tenth of --max-steps)."))] = None,
    seed: Annotated[int | None, typer.Option("--seed", rich_help_panel=OPT, help=(
        "Seed for init, data order, noise and dropout (default: 1)."))] = None,
    time_budget: Annotated[str | None, typer.Option("--time-budget", rich_help_panel=STOP, help=(
        "Stop after this much training time in this session: 90s, 15m, 1h30m."))] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", rich_help_panel=STOP,
                                                  help="Stop after this many optimizer steps in all.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", rich_help_panel=STOP,
                                               help="Stop after this many passes over the text.")] = None,
    eval_every: Annotated[int | None, typer.Option("--eval-every", rich_help_panel=STOP, help=(
        "Evaluate on the held-out text and save last/ every N steps (default: 500)."))] = None,
    save_every: Annotated[str | None, typer.Option("--save-every", rich_help_panel=STOP, help=(
        "Also save last/ after this much time without a save: 90s, 10m, 0 = off (default: 10m)."))] = None,
    device: Annotated[str | None, typer.Option("--device", rich_help_panel=HW, help=(
        "auto, cpu or cuda (default: auto = cuda when available)."))] = None,
    precision: Annotated[str | None, typer.Option("--precision", rich_help_panel=HW, help=(
        "auto (fp32 on CPU, bf16 on GPU), fp32, bf16 or fp16 (default: auto)."))] = None,
) -> None:
    """Pretrain on unlabelled text (masked LM or denoising), for attn train --init-from."""
    from .checkpoint import TRAIN_CONFIG_FILE
    from .config import OBJECTIVES
    from .errors import AttnError
    from .pipeline import RunRequest, train_run
    from .train import Interrupted

    if task not in OBJECTIVES:
        raise AttnError(f"unknown task '{task}'", f"use one of {', '.join(OBJECTIVES)}")
    options = dict(preset=preset, dropout=dropout, max_len=max_len, max_tokens=max_tokens, accum=accum,
                   lr=lr, warmup=warmup, seed=seed, time_budget=parse_duration(time_budget),
                   max_steps=max_steps, epochs=epochs, eval_every=eval_every,
                   save_every=parse_duration(save_every), device=device, precision=precision,
                   vocab_size=vocab_size, lowercase=lowercase, objective=objective or OBJECTIVES[task][0])
    saved = read_json(out / TRAIN_CONFIG_FILE) if resume else None
    if saved is not None and saved.get("objective") is None:
        raise AttnError(f"{out} is an attn train run, not a pretraining run", f"resume it with attn train {task}")
    toml = load_toml(config)
    cfg = resolve_config(task, options, toml, saved)
    if saved is None and "warmup" not in toml and warmup is None:
        cfg = short_run_warmup(cfg)
    fields = make_fields(src, tgt, src_field, tgt_field, text_field, None)
    req = RunRequest(data=data, out=out, valid=valid, subset=subset, split=split, tokenizer=tokenizer,
                     resume=resume, overwrite=overwrite, fields=fields, data_cache=data_cache,
                     documents=documents)
    with ui.progress(total_known=cfg.max_steps is not None) as bar:
        reporter = RichReporter(bar, cfg.max_steps, 50, "tok")
        try:
            result = train_run(req, cfg, reporter)
        except Interrupted as e:
            again = shlex.join(["attn", "pretrain", task, "--data", data, "--out", str(out), "--resume"])
            ui.err.print(f"[yellow]Interrupted:[/] {escape(e.message)}. Resume with: {escape(again)}",
                         soft_wrap=True)
            raise typer.Exit(130) from None
    if ui.is_main_process():
        st = result.state
        table = Table(title=f"Pretraining finished: {result.reason}", show_header=False, title_justify="left")
        table.add_row("run directory", str(result.run_dir))
        table.add_row("objective", cfg.objective)
        table.add_row("steps", f"{st['step']:,} ({st['train_seconds'] / 60:.1f} min)")
        metric = "masked_accuracy" if task == "sentiment" else "token_accuracy"
        best = "n/a" if st["best"] is None else f"{st['best']:.2f}"
        table.add_row(f"best validation {metric}", f"{best} (step {st['best_step']})")
        table.add_row("next", f"attn train {task} --init-from {result.run_dir} --data SPEC --out RUN_DIR")
        ui.err.print(table)
