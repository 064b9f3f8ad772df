"""Options shared by several commands (one definition each, with its help text) and the small
helpers that turn them into library objects."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attn_cli.cli.app import flag
from attn_cli.config import ModelConfig, TrainConfig
from attn_cli.errors import AttnError

# Defaults in --help: Typer shows a literal default as "[default: X]"; an option whose None means
# a default in words (or one that depends on the task or data) says it with show_default="X", which
# renders the same way (cli/app.py), never in its help text: one default, in one style, per option.

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
    "--src-field", rich_help_panel=DATA_PANEL, show_default="the first of document, article, dialogue, text",
    help="summarize: document column.")]
TgtFieldOpt = Annotated[str | None, typer.Option(
    "--tgt-field", rich_help_panel=DATA_PANEL, show_default="the first of summary, highlights, title",
    help="summarize: summary column.")]
TextFieldOpt = Annotated[str | None, typer.Option(
    "--text-field", rich_help_panel=DATA_PANEL, show_default="the first of text, sentence, review",
    help="sentiment: text column.")]
LabelFieldOpt = Annotated[str | None, typer.Option(
    "--label-field", rich_help_panel=DATA_PANEL, show_default="label", help="sentiment: label column.")]
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
CACHE_DEFAULT = "$ATTN_CACHE, else ~/.cache/attn"
DataCacheOpt = Annotated[Path | None, typer.Option(
    "--data-cache", rich_help_panel=DATA_PANEL, show_default=CACHE_DEFAULT,
    help="Directory of the tokenized-data cache; see attn cache list.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", rich_help_panel=RUN, help=(
        "TOML file whose keys are these options (max-tokens = 8192); options override it."))]
ResumeOpt = Annotated[bool, flag("--resume", rich_help_panel=RUN, help=(
        "Continue the run in --out from last/ (same data order and RNG).") )]
OverwriteOpt = Annotated[bool, flag("--overwrite", rich_help_panel=RUN,
                                    help="Replace a non-empty --out.")]
TokenizerOpt = Annotated[Path | None, typer.Option(
    "--tokenizer", rich_help_panel=RUN, show_default="train one on the training data",
    help="Use this tokenizer directory.")]
VocabSizeOpt = Annotated[int | None, typer.Option(
    "--vocab-size", rich_help_panel=RUN, show_default=str(TrainConfig.vocab_size),
    help="Size of the tokenizer trained when --tokenizer is not given.")]
LowercaseOpt = Annotated[bool | None, flag("--lowercase", rich_help_panel=RUN, show_default=False, help=(
        "Have the tokenizer trained when --tokenizer is not given fold case ('The' and 'the' "
        "become the same pieces; as attn tokenizer train --lowercase)."))]
PRESET_HELP = ("Model size: auto sizes it to the data and the budget (--time-budget, --max-steps or "
               "--epochs; docs/sizing.md); or tiny (0.75M params*), small (7.6M*), base (48M*), big (185M*). "
               "*joint 8k vocabulary translation model.")
PresetOpt = Annotated[str | None, typer.Option(  # attn train: --init-from brings its run's
    "--preset", rich_help_panel=MODEL, show_default=f"{TrainConfig.preset}; with --init-from, that run's shape",
    help=PRESET_HELP)]
PretrainPresetOpt = Annotated[str | None, typer.Option(
    "--preset", rich_help_panel=MODEL, show_default=TrainConfig.preset, help=PRESET_HELP)]
DModelOpt = Annotated[int | None, typer.Option(
    "--d-model", rich_help_panel=MODEL, show_default="the preset's",
    help="Model width; wins over the preset's (and auto's).")]
LayersOpt = Annotated[int | None, typer.Option(
    "--layers", rich_help_panel=MODEL, show_default="the preset's",
    help="Encoder layers (and as many decoder layers); wins over the preset's (and auto's).")]
HeadsOpt = Annotated[int | None, typer.Option(
    "--heads", rich_help_panel=MODEL, show_default="the preset's",
    help="Attention heads (must divide --d-model); wins over the preset's (and auto's).")]
DffOpt = Annotated[int | None, typer.Option(
    "--d-ff", rich_help_panel=MODEL, show_default="the preset's",
    help="Feed-forward width; wins over the preset's (and auto's).")]
DropoutOpt = Annotated[float | None, typer.Option(
    "--dropout", rich_help_panel=MODEL, show_default=str(ModelConfig.dropout), help="Dropout.")]
MaxLenOpt = Annotated[int | None, typer.Option(
    "--max-len", rich_help_panel=MODEL, show_default=str(TrainConfig.max_len),
    help="Positions per side; longer inputs are truncated.")]
MaxTokensOpt = Annotated[int | None, typer.Option(
    "--max-tokens", rich_help_panel=OPT, show_default="4096 on a CPU; on a GPU ~1024 per GiB of memory, x processes",
    help="Padded tokens per batch, all processes together: N processes split each batch and train "
         "exactly as one process with the same value. Not given: 4,096 on a CPU; on a GPU about "
         "1,024 per GiB of its memory (65,536 on an 80 GB card) for each process.")]
AccumOpt = Annotated[int | None, typer.Option(
    "--accum", rich_help_panel=OPT, show_default=str(TrainConfig.accum),
    help="Batches accumulated per optimizer step.")]
LrOpt = Annotated[float | None, typer.Option(
    "--lr", rich_help_panel=OPT, show_default=f"{TrainConfig.lr:g}", help="Peak learning rate.")]
WarmupOpt = Annotated[int | None, typer.Option(
    "--warmup", rich_help_panel=OPT,
    show_default=f"{TrainConfig.warmup}, at most a tenth of --max-steps or of a --time-budget's steps",
    help="Linear warmup steps (a --time-budget run counts its steps at the speed of its first 10).")]
SeedOpt = Annotated[int | None, typer.Option(
    "--seed", rich_help_panel=OPT, show_default=str(TrainConfig.seed),
    help="Seed for init, data order and dropout.")]
TimeBudgetOpt = Annotated[str | None, typer.Option("--time-budget", rich_help_panel=STOP, help=(
        "Stop after this much training time in all (a resumed run continues to it): 90s, 15m, "
        "1h30m. The learning rate decays to zero as it ends."))]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", rich_help_panel=STOP,
                                                  help="Stop after this many optimizer steps in all.")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", rich_help_panel=STOP,
                                               help="Stop after this many epochs.")]
EvalEveryOpt = Annotated[int | None, typer.Option(
    "--eval-every", rich_help_panel=STOP,
    show_default="about 10 times a --time-budget or --max-steps run (at least 50 steps apart), else 500",
    help="Evaluate and save last/ every N steps.")]
SaveEveryOpt = Annotated[str | None, typer.Option(
    "--save-every", rich_help_panel=STOP, show_default=f"{TrainConfig.save_every / 60:g}m",
    help="Also save last/ (the resumable state) after this much time without a save, so a kill "
    "loses at most that much: 90s, 10m, 0 = only at evaluations.")]
RunDeviceOpt = Annotated[str | None, typer.Option(
    "--device", rich_help_panel=HW, show_default="auto = cuda when available", help="auto, cpu or cuda.")]
PrecisionOpt = Annotated[str | None, typer.Option(
    "--precision", rich_help_panel=HW, show_default=TrainConfig.precision,
    help="auto (fp32 on CPU, bf16 on GPU), fp32, bf16 or fp16.")]
