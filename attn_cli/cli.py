"""The `attn` command line: parse options, call the library, render with rich.

Every command runs inside :func:`command`, which turns an :class:`AttnError` into one red line on
stderr with the error's exit code (2 bad usage/data, 1 runtime failure, 130 Ctrl-C), and shows a
traceback only with ``--debug`` or ``ATTN_DEBUG=1``.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from . import __version__
from . import console as ui
from .errors import EXIT_INTERRUPTED, EXIT_RUNTIME, AttnError

def _without_flag_placeholders(params: list) -> list:
    """On/off options (ours, and Typer's own --help and completion flags) show no ``<bool>``
    value placeholder in --help: they take no value."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _NoFlagPlaceholders:
    def get_params(self, ctx):
        return _without_flag_placeholders(super().get_params(ctx))


class AttnGroup(_NoFlagPlaceholders, TyperGroup):
    """The attn app and its sub-apps."""


class AttnCommand(_NoFlagPlaceholders, TyperCommand):
    """Every attn command."""


app = typer.Typer(
    name="attn",
    cls=AttnGroup,
    help="Train and run your own transformer for [bold]translation[/], [bold]sentiment[/] and "
    "[bold]summarization[/], from scratch, on one CPU or many GPUs.",
    epilog="Examples:  attn tokenizer train --data data/translate.it-en.jsonl --src it --tgt en "
    "--vocab-size 1000 --out tok  ·  attn tokenizer encode --tokenizer tok \"Buongiorno!\"",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
tokenizer_app = typer.Typer(help="Train and inspect SentencePiece tokenizers.", no_args_is_help=True,
                            rich_markup_mode="rich", cls=AttnGroup)
app.add_typer(tokenizer_app, name="tokenizer")

_state = {"debug": os.environ.get("ATTN_DEBUG", "") not in ("", "0")}


def command(fn):
    """Run a command with user-facing error handling (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except AttnError as e:
            if _state["debug"]:
                raise
            ui.error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            ui.error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as e:  # noqa: BLE001 - the last line of defence for users
            if _state["debug"]:
                raise
            ui.error(f"{type(e).__name__}: {e} (this is a bug in attn; rerun with --debug for the "
                     "traceback and report it)")
            raise typer.Exit(EXIT_RUNTIME) from None

    return wrapper


def flag(*decls: str, **kw):
    """A typer on/off option shown without a value placeholder in --help."""
    return typer.Option(*decls, metavar="", **kw)


def _version(value: bool) -> None:
    if value:
        ui.out.print(f"attn {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, flag("--version", callback=_version, is_eager=True,
                                  help="Print the version and exit.")] = False,
    debug: Annotated[bool, flag("--debug", envvar="ATTN_DEBUG",
                                help="Show full tracebacks on errors.")] = False,
) -> None:
    """Train and run your own transformer."""
    _state["debug"] = debug  # set on every invocation (ATTN_DEBUG arrives through envvar)


# ------------------------------------------------------------------ shared data options

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


# ------------------------------------------------------------------ attn tokenizer

@tokenizer_app.command("train", cls=AttnCommand, epilog="Example:  attn tokenizer train --data "
                       "../shared/data/translation/multi30k/train --src de --tgt en "
                       "--vocab-size 8000 --out tok-de-en")
@command
def tokenizer_train(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the tokenizer into.",
                                      show_default=False)],
    task: Annotated[str | None, typer.Option(
        "--task", help="translate, summarize or sentiment [default: inferred from the options "
        "and columns].")] = None,
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Pieces per vocabulary, "
                                            "special ids included.")] = 8000,
    model_type: Annotated[str, typer.Option("--model-type", help="unigram or bpe.")] = "unigram",
    separate_vocab: Annotated[bool, flag(
        "--separate-vocab", help="One vocabulary per side instead of a joint one (seq2seq).")] = False,
    max_sentences: Annotated[int, typer.Option(
        "--max-sentences", help="Sample at most this many sentences per vocabulary.")] = 2_000_000,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    lowercase: Annotated[bool, flag("--lowercase", help=(
        "Fold case ('The' and 'the' become the same pieces), in training and in every later "
        "encoding; decoding then gives lowercase text."))] = False,
    overwrite: Annotated[bool, flag("--overwrite", help="Replace a non-empty --out.")] = False,
    verbose: Annotated[bool, flag("--verbose", help="Show SentencePiece's own log.")] = False,
    src: SrcOpt = None, tgt: TgtOpt = None, src_field: SrcFieldOpt = None,
    tgt_field: TgtFieldOpt = None, text_field: TextFieldOpt = None,
    label_field: LabelFieldOpt = None, subset: SubsetOpt = None, split: SplitOpt = "train",
) -> None:
    """Train a SentencePiece tokenizer on the text of a dataset."""
    from .checkpoint import commit_dir, prepare_out_dir, stage_dir
    from .data import load_spec, normalize, texts_for_tokenizer
    from .tokenizer import TokenizerConfig, train_tokenizers

    cfg = TokenizerConfig(vocab_size=vocab_size, model_type=model_type, joint=not separate_vocab,
                          max_sentences=max_sentences, seed=seed, lowercase=lowercase)
    prepare_out_dir(out, overwrite, "tokenizer")
    fields = make_fields(src, tgt, src_field, tgt_field, text_field, label_field)
    start = time.perf_counter()
    raw = load_spec(data, split, fields=fields, subset=subset)
    task = infer_task(task, fields, raw.column_names)
    ds, _ = normalize(raw, task, fields)
    src_cols, tgt_cols = texts_for_tokenizer(ds, task)
    with ui.progress() as bar:
        job = bar.add_task("reading sentences", total=None, info="")

        def on_progress(stage: str, done: int, total: int) -> None:
            bar.update(job, description=stage, completed=done, total=total)
            if done == total and stage.startswith("reading"):
                bar.update(job, info="training SentencePiece…")

        toks = train_tokenizers(ds, src_cols, tgt_cols, cfg, verbose=verbose, on_progress=on_progress)
    staged = stage_dir(out)
    toks.save(staged)
    commit_dir(staged, out)
    table = Table(title=f"Tokenizer written to {out}", show_header=False)
    table.add_row("task", task)
    table.add_row("examples", f"{len(ds):,}")
    table.add_row("vocabulary", "joint" if toks.joint else "separate (source / target)")
    table.add_row("pieces", f"{toks.src.vocab_size:,}" if toks.joint
                  else f"{toks.src.vocab_size:,} / {toks.tgt.vocab_size:,}")
    table.add_row("model type", cfg.model_type + (", lowercase" if cfg.lowercase else ""))
    table.add_row("time", f"{time.perf_counter() - start:.1f} s")
    ui.err.print(table)


@tokenizer_app.command("encode", cls=AttnCommand, epilog="Example:  attn tokenizer encode --tokenizer tok "
                       "\"Ein Hund läuft.\"")
@command
def tokenizer_encode(
    texts: Annotated[list[str], typer.Argument(help="Text(s) to encode.", show_default=False)],
    tokenizer: Annotated[Path, typer.Option("--tokenizer", "-t", help="Tokenizer directory "
                                            "(or a run directory).", show_default=False)],
    side: Annotated[str, typer.Option("--side", help="src or tgt (differs only with "
                                      "--separate-vocab).")] = "src",
    as_json: Annotated[bool, flag("--json", help="One JSON object per text.")] = False,
) -> None:
    """Show the pieces and ids of some text, and check that decoding gives it back."""
    from .errors import DataError
    from .tokenizer import Tokenizers

    if side not in ("src", "tgt"):
        raise DataError(f"unknown --side '{side}'", "use src or tgt")
    tok = getattr(Tokenizers.load(tokenizer), side)
    for text in texts:
        ids = tok.encode(text)
        pieces = [tok.id_to_piece(i) for i in ids]
        decoded = tok.decode(ids)
        if as_json:
            ui.out.print(json.dumps({"text": text, "pieces": pieces, "ids": ids,
                                     "decoded": decoded, "round_trip": decoded == text},
                                    ensure_ascii=False), markup=False)
            continue
        ui.out.print(f"[bold]{text}[/]")
        ui.out.print("pieces: " + " ".join(pieces), markup=False)
        ui.out.print("ids:    " + " ".join(map(str, ids)), markup=False)
        ui.out.print("round trip: exact" if decoded == text else f"decoded: {decoded}", markup=False)


def main() -> None:
    app()


# Commands defined in their own modules register themselves on `app` when imported.
from . import cli_cache, cli_infer, cli_train  # noqa: E402,F401
