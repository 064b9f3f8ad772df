"""Options shared by several commands (one definition each, with its help text) and the small
helpers that turn them into library objects."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .cli_app import flag
from .errors import AttnError

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
    from .data import Fields

    return Fields(src_lang=src, tgt_lang=tgt, src_field=src_field, tgt_field=tgt_field,
                  text_field=text_field, label_field=label_field)


def infer_task(task: str | None, fields, columns: list[str]) -> str:
    """The task named, else translate with --src/--tgt, else guessed from the columns."""
    from .data import LABEL_FIELDS, TASKS, TGT_FIELDS
    from .errors import DataError

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
    "Intra-op CPU threads; 0 = auto: 1 on machines with at most 2 cores (measured fastest there), "
    "else the library's default."))]


def decode_cfg(task: str, **options):
    """The task's decoding (config.DECODE_DEFAULTS) with the options given (None = the task's
    value); a bad value is a one-line error."""
    from .config import task_decode_config

    try:
        return task_decode_config(task, **options)
    except ValueError as e:
        raise AttnError(f"bad decoding option: {e}", "see --help") from None
