"""`attn tokenizer train` and `attn tokenizer encode`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from attn_cli.cli import console as ui
from attn_cli.cli.app import AttnCommand, AttnGroup, app, command, flag
from attn_cli.cli.options import (
    DataOpt,
    LabelFieldOpt,
    SplitOpt,
    SrcFieldOpt,
    SrcOpt,
    SubsetOpt,
    TextFieldOpt,
    TgtFieldOpt,
    TgtOpt,
    infer_task,
    make_fields,
)

tokenizer_app = typer.Typer(help="Train and inspect SentencePiece tokenizers.", no_args_is_help=True,
                            rich_markup_mode="rich", cls=AttnGroup)
app.add_typer(tokenizer_app, name="tokenizer")

@tokenizer_app.command("train", cls=AttnCommand, epilog="Example:  attn tokenizer train --data "
                       "../shared/data/translation/multi30k/train --src de --tgt en "
                       "--vocab-size 8000 --out tok-de-en")
@command
def tokenizer_train(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the tokenizer into.",
                                      show_default=False)],
    task: Annotated[str | None, typer.Option(
        "--task", show_default="inferred from the options and columns",
        help="translate, summarize or sentiment.")] = None,
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
    from attn_cli.data.spec import load_spec
    from attn_cli.data.tasks import normalize, texts_for_tokenizer
    from attn_cli.data.tokenizer import TokenizerConfig, train_tokenizers
    from attn_cli.rundir import commit_dir, prepare_out_dir, stage_dir

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
    from attn_cli.data.tokenizer import Tokenizers
    from attn_cli.errors import DataError

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
