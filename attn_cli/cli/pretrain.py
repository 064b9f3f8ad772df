"""`attn pretrain TASK`: self-supervised pretraining on unlabelled text, for `attn train TASK
--init-from RUN_DIR` to fine-tune (the loop, run directory and resume are attn train's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from attn_cli.cli import console as ui
from attn_cli.cli.app import AttnCommand, app, command
from attn_cli.cli.options import (
    MODEL,
    RUN,
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
    LowercaseOpt,
    LrOpt,
    MaxLenOpt,
    MaxStepsOpt,
    MaxTokensOpt,
    OverwriteOpt,
    PrecisionOpt,
    PretrainPresetOpt,
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
)
from attn_cli.cli.train import (
    load_toml,
    make_fields,
    parse_duration,
    read_json,
    resolve_config,
    run_with_progress,
    short_run_warmup,
)


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
    objective: Annotated[str | None, typer.Option("--objective", rich_help_panel=MODEL,
                                                  show_default="mlm / denoise", help=(
        "sentiment: mlm (15% of pieces, 80/10/10) or mlm-whole-word; translate/summarize: denoise "
        "(BART text infilling: Poisson(3) spans over 30% of pieces) or denoise-permute (also "
        "shuffles sentences)."))] = None,
    valid: Annotated[str | None, typer.Option("--valid", rich_help_panel="Data",
                                              show_default=("the data's validation split, else a share "
                                                            "of it held out (as attn train)"),
                                              help="Held-out text SPEC.")] = None,
    documents: Annotated[bool | None, typer.Option(
        "--documents/--lines", rich_help_panel="Data", show_default="detected", help=(
            "A .txt holds blank-line-separated documents / one text per line."))] = None,
    src: SrcOpt = None, tgt: TgtOpt = None, src_field: SrcFieldOpt = None, tgt_field: TgtFieldOpt = None,
    text_field: TextFieldOpt = None, subset: SubsetOpt = None, split: SplitOpt = "train",
    data_cache: DataCacheOpt = None, config: ConfigOpt = None, resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False, tokenizer: TokenizerOpt = None, vocab_size: VocabSizeOpt = None,
    lowercase: LowercaseOpt = None, preset: PretrainPresetOpt = None, d_model: DModelOpt = None,
    layers: LayersOpt = None, heads: HeadsOpt = None, d_ff: DffOpt = None, dropout: DropoutOpt = None,
    max_len: MaxLenOpt = None, max_tokens: MaxTokensOpt = None, accum: AccumOpt = None, lr: LrOpt = None,
    warmup: WarmupOpt = None, seed: SeedOpt = None, time_budget: TimeBudgetOpt = None,
    max_steps: MaxStepsOpt = None, epochs: EpochsOpt = None, eval_every: EvalEveryOpt = None,
    save_every: SaveEveryOpt = None, device: RunDeviceOpt = None, precision: PrecisionOpt = None,
) -> None:
    """Pretrain on unlabelled text (masked LM or denoising), for attn train --init-from."""
    import dataclasses

    from attn_cli.config import OBJECTIVES
    from attn_cli.errors import AttnError
    from attn_cli.eval.metrics import PRETRAIN_METRIC
    from attn_cli.rundir import TRAIN_CONFIG_FILE
    from attn_cli.train.setup import RunRequest

    if task not in OBJECTIVES:
        raise AttnError(f"unknown task '{task}'", f"use one of {', '.join(OBJECTIVES)}")
    options = dict(preset=preset, d_model=d_model, n_layers=layers, n_heads=heads, d_ff=d_ff, dropout=dropout,
                   max_len=max_len, max_tokens=max_tokens, accum=accum,
                   lr=lr, warmup=warmup, seed=seed, time_budget=parse_duration(time_budget),
                   max_steps=max_steps, epochs=epochs, eval_every=eval_every,
                   save_every=parse_duration(save_every), device=device, precision=precision,
                   vocab_size=vocab_size, lowercase=lowercase, objective=objective)
    saved = read_json(out / TRAIN_CONFIG_FILE) if resume else None
    if saved is not None and saved.get("objective") is None:
        raise AttnError(f"{out} is an attn train run, not a pretraining run", f"resume it with attn train {task}")
    toml = load_toml(config)
    cfg = resolve_config(task, options, toml, saved)
    if cfg.objective is None:  # not on the command line, in --config or in the resumed run
        cfg = dataclasses.replace(cfg, objective=OBJECTIVES[task][0])
    note = None
    if saved is None and "warmup" not in toml and warmup is None:
        cfg, note = short_run_warmup(cfg)
    fields = make_fields(src, tgt, src_field, tgt_field, text_field, None)
    req = RunRequest(data=data, out=out, valid=valid, subset=subset, split=split, tokenizer=tokenizer,
                     resume=resume, overwrite=overwrite, fields=fields, data_cache=data_cache,
                     documents=documents, notes=[note] if note else [])
    result = run_with_progress(req, cfg, "pretrain", "tok")
    if ui.is_main_process():
        st = result.state
        table = Table(title=f"Pretraining finished: {result.reason}", show_header=False, title_justify="left")
        table.add_row("run directory", str(result.run_dir))
        table.add_row("objective", cfg.objective)
        table.add_row("steps", f"{st['step']:,} ({st['train_seconds'] / 60:.1f} min)")
        metric = PRETRAIN_METRIC[task]
        best = "n/a" if st["best"] is None else f"{st['best']:.2f}"
        table.add_row(f"best validation {metric}", f"{best} (step {st['best_step']})")
        table.add_row("next", f"attn train {task} --init-from {result.run_dir} --data SPEC --out RUN_DIR")
        ui.err.print(table)
