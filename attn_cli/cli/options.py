"""Options shared by several commands (one definition each, with its help text) and the small
helpers that turn them into library objects."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attn_cli.cli.app import flag
from attn_cli.errors import AttnError

# ------------------------------------------------------------------ data

DATA_PANEL = "Data"
DataOpt = Annotated[str, typer.Option(
    "--data", "-d", rich_help_panel=DATA_PANEL, show_default=False,
    help="Data SPEC: a file (.jsonl .json .csv .tsv .parquet .txt, also .gz), a directory of "
    "split files, a parallel prefix (path/train + --src/--tgt), or a Hub dataset name.")]
SrcOpt = Annotated[str | None, typer.Option(
    "--src", rich_help_panel=DATA_PANEL, help="translate: source language code (column or file suffix).")]
TgtOpt = Annotated[str | None, typer.Option(
    "--tgt", rich_help_panel=DATA_PANEL, help="translate: target language code.")]
SrcFieldOpt = Annotated[str | None, typer.Option(
    "--src-field", rich_help_panel=DATA_PANEL,
    help="summarize: document column (default: document/article/dialogue/text).")]
TgtFieldOpt = Annotated[str | None, typer.Option(
    "--tgt-field", rich_help_panel=DATA_PANEL,
    help="summarize: summary column (default: summary/highlights/title).")]
TextFieldOpt = Annotated[str | None, typer.Option(
    "--text-field", rich_help_panel=DATA_PANEL, help="sentiment: text column (default: text/sentence/review).")]
LabelFieldOpt = Annotated[str | None, typer.Option(
    "--label-field", rich_help_panel=DATA_PANEL, help="sentiment: label column (default: label).")]
SubsetOpt = Annotated[str | None, typer.Option(
    "--subset", rich_help_panel=DATA_PANEL, help="Hub dataset configuration, e.g. de-en.")]
SplitOpt = Annotated[str, typer.Option(
    "--split", rich_help_panel=DATA_PANEL, help="Which split of the SPEC to read.")]


def make_fields(src, tgt, src_field, tgt_field, text_field, label_field):
    from attn_cli.data.spec import Fields

    return Fields(src_lang=src, tgt_lang=tgt, src_field=src_field, tgt_field=tgt_field,
                  text_field=text_field, label_field=label_field)


def infer_task(task: str | None, fields, columns: list[str]) -> str:
    """The task named, else translate with --src/--tgt, else guessed from the columns."""
    from attn_cli.data.tasks import LABEL_FIELDS, TASKS, TGT_FIELDS
    from attn_cli.errors import DataError

    if task is not None:
        if task not in TASKS:
            raise DataError(f"unknown task '{task}'", f"use one of {', '.join(TASKS)}")
        return task
    if fields.src_lang or fields.tgt_lang:
        return "translate"
    if fields.label_field or fields.text_field or any(c in columns for c in LABEL_FIELDS):
        return "sentiment"
    if fields.src_field or fields.tgt_field or any(c in columns for c in TGT_FIELDS):
        return "summarize"
    raise DataError(f"cannot tell the task from the columns ({', '.join(columns)})",
                    "pass --task translate|summarize|sentiment")


# ------------------------------------------------------------------ inference

DEC = "Decoding"
ModelOpt = Annotated[Path, typer.Option("--model", "-m", show_default=False,
                                        help="Run directory written by attn train.")]
TextsArg = Annotated[list[str] | None, typer.Argument(
    show_default=False, help="Input text(s); without them, -i FILE or standard input is read.")]
InOpt = Annotated[Path | None, typer.Option("--input", "-i", help="Read inputs from FILE.",
                                            readable=False)]  # checked by read_inputs: one-line errors
OutOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write outputs to FILE (atomically).")]
JsonOpt = Annotated[bool, flag("--json", help="JSON lines with input, output and score.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
MaxTokOpt = Annotated[int, typer.Option("--max-tokens", help="Source tokens per batch.")]
ENG = "Engine"
EngineOpt = Annotated[str, typer.Option("--engine", rich_help_panel=ENG, help=(
    "auto (the run's ct2/ export from attn export when valid and up to date, else torch), "
    "torch or ctranslate2."))]
ComputeOpt = Annotated[str, typer.Option("--compute-type", rich_help_panel=ENG, help=(
    "ctranslate2: auto (the exported weights' type), int8, float32, or on a GPU float16 or "
    "int8_float16."))]
ThreadsOpt = Annotated[int, typer.Option("--threads", rich_help_panel=ENG, help=(
    "Intra-op CPU threads; 0 = auto: torch's default (one per core); for ctranslate2 1, with "
    "as many batches decoded side by side as there are cores (measured fastest on 2 cores)."))]


def decode_cfg(task: str, **options):
    """The task's decoding (config.DECODE_DEFAULTS) with the options given (None = the task's
    value); a bad value is a one-line error."""
    from attn_cli.config import task_decode_config

    try:
        return task_decode_config(task, **options)
    except ValueError as e:
        raise AttnError(f"bad decoding option: {e}", "see --help") from None


# ------------------------------------------------------------------ training runs (attn train, attn pretrain)

RUN, MODEL, OPT, STOP, HW = "Run", "Model", "Optimisation", "When to stop", "Hardware"
DataCacheOpt = Annotated[Path | None, typer.Option("--data-cache", rich_help_panel=DATA_PANEL, help=(
        "Directory of the tokenized-data cache (default: $ATTN_CACHE, else ~/.cache/attn); "
        "see attn cache list."))]
ConfigOpt = Annotated[Path | None, typer.Option("--config", rich_help_panel=RUN, help=(
        "TOML file whose keys are these options (max-tokens = 8192); options override it."))]
ResumeOpt = Annotated[bool, flag("--resume", rich_help_panel=RUN, help=(
        "Continue the run in --out from last/ (same data order and RNG).") )]
OverwriteOpt = Annotated[bool, flag("--overwrite", rich_help_panel=RUN,
                                    help="Replace a non-empty --out.")]
TokenizerOpt = Annotated[Path | None, typer.Option("--tokenizer", rich_help_panel=RUN, help=(
        "Use this tokenizer directory (default: train one on the training data)."))]
VocabSizeOpt = Annotated[int | None, typer.Option("--vocab-size", rich_help_panel=RUN, help=(
        "Size of the tokenizer trained when --tokenizer is not given (default: 8000)."))]
LowercaseOpt = Annotated[bool | None, flag("--lowercase", rich_help_panel=RUN, show_default=False, help=(
        "Have the tokenizer trained when --tokenizer is not given fold case ('The' and 'the' "
        "become the same pieces; as attn tokenizer train --lowercase)."))]
PresetOpt = Annotated[str | None, typer.Option("--preset", rich_help_panel=MODEL, help=(
        "Model size: tiny (0.75M params*), small (7.6M*), base (48M*), big (185M*) "
        "(default: small). *joint 8k vocabulary translation model."))]
DropoutOpt = Annotated[float | None, typer.Option("--dropout", rich_help_panel=MODEL,
                                                  help="Dropout (default: 0.1).")]
MaxLenOpt = Annotated[int | None, typer.Option("--max-len", rich_help_panel=MODEL, help=(
        "Positions per side; longer inputs are truncated (default: 256)."))]
MaxTokensOpt = Annotated[int | None, typer.Option("--max-tokens", rich_help_panel=OPT, help=(
        "Padded tokens per batch (all processes together) (default: 4096)."))]
AccumOpt = Annotated[int | None, typer.Option("--accum", rich_help_panel=OPT, help=(
        "Batches accumulated per optimizer step (default: 1)."))]
LrOpt = Annotated[float | None, typer.Option("--lr", rich_help_panel=OPT,
                                             help="Peak learning rate (default: 7e-4).")]
WarmupOpt = Annotated[int | None, typer.Option("--warmup", rich_help_panel=OPT,
                                               help="Warmup steps (default: 800).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", rich_help_panel=OPT, help=(
        "Seed for init, data order and dropout (default: 1)."))]
TimeBudgetOpt = Annotated[str | None, typer.Option("--time-budget", rich_help_panel=STOP, help=(
        "Stop after this much training time in this session: 90s, 15m, 1h30m."))]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", rich_help_panel=STOP,
                                                  help="Stop after this many optimizer steps in all.")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", rich_help_panel=STOP,
                                               help="Stop after this many epochs.")]
EvalEveryOpt = Annotated[int | None, typer.Option("--eval-every", rich_help_panel=STOP, help=(
        "Evaluate and save last/ every N steps (default: 500)."))]
SaveEveryOpt = Annotated[str | None, typer.Option("--save-every", rich_help_panel=STOP, help=(
        "Also save last/ (the resumable state) after this much time without a save, so a kill "
        "loses at most that much: 90s, 10m, 0 = only at evaluations (default: 10m)."))]
RunDeviceOpt = Annotated[str | None, typer.Option("--device", rich_help_panel=HW, help=(
        "auto, cpu or cuda (default: auto = cuda when available)."))]
PrecisionOpt = Annotated[str | None, typer.Option("--precision", rich_help_panel=HW, help=(
        "auto (fp32 on CPU, bf16 on GPU), fp32, bf16 or fp16 (default: auto)."))]
