"""Unlabelled text for pretraining (`attn pretrain`): any data SPEC as rows of one text each.

Which texts a SPEC gives (the fields the labelled tasks read; labels are never read):

  .txt file      one text per line; or, when blank lines separate multi-line blocks
                 (:func:`looks_like_documents`; ``documents=True/False`` decides instead), one
                 document per block, its lines kept (joined by a newline, as `attn summarize`
                 reads blank-line-separated documents). Field options do not apply to a .txt.
  translate      the language columns (``--src``/``--tgt``, those present; both files of a
                 parallel prefix), each side its own row; without them, a text column
  summarize      the document (document, article, dialogue, text, ...) and, when present, the
                 summary (summary, highlights, title, ...), each its own row
  sentiment      the text column (text, sentence, review, content); rows without a label are fine

Rows keep the data's order, an example's texts side by side (its document, then its summary),
stripped; empty texts are dropped. The same :class:`TextRows` turns raw column batches into
rows on both reading paths (`datasets` Arrow for the Hub and tokenizer training, streamed
batches for the cache build), so the two give the same rows in the same order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from attn_cli.data.spec import Fields, Source, _hf, _open_bytes, file_format, load_source, locate
from attn_cli.data.tasks import SRC_FIELDS, TEXT_DTYPES, TEXT_FIELDS, TGT_FIELDS, _flatten_translation, _pick
from attn_cli.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset

TEXT = "text"  # the one column of pretraining rows
DOC_LINES = 200  # a .txt whose blank-line-separated blocks average more lines is read by lines
DETECT_BYTES = 64 << 20  # ... judged on this much of the file


def text_cost(task: str) -> int:
    """Slots a pretraining row costs beyond its ids when batches are planned: 1 for the
    encoder-decoder's denoising (translate, summarize: the target is the row plus EOS, and
    :func:`noising.span_infill`'s source is at most that long), 0 for the encoder's masked LM
    (sentiment). The cache's ``lengths`` already include it."""
    return 0 if task == "sentiment" else 1


def text_limit(task: str, max_len: int) -> int:
    """Ids kept of a pretraining row: ``max_len`` for masked LM, ``max_len - 1`` for denoising
    (the target's BOS/EOS slot), as labelled data is cut."""
    return max_len - text_cost(task)


def looks_like_documents(path: Path) -> bool:
    """Whether a .txt file holds blank-line-separated documents: blank lines separate it into
    two or more blocks, some block has several lines (else reading by lines gives the same
    rows), and the blocks average at most DOC_LINES lines (a stray blank line or two in a
    long one-text-per-line file does not make it two huge documents). Judged on the first
    DETECT_BYTES of the file."""
    blocks = lines = read = 0
    multi_line = before = False  # some block has 2+ lines; the previous line was non-blank
    with _open_bytes(path) as fh:
        for line in fh:
            read += len(line)
            if line.strip():
                blocks += not before
                lines += 1
                multi_line = multi_line or before
                before = True
            else:
                before = False
            if read >= DETECT_BYTES:
                break
    return blocks >= 2 and multi_line and lines <= DOC_LINES * blocks


def resolve_documents(source: Source, documents: bool | None) -> tuple[Source, list[str]]:
    """A .txt source read by lines or by documents (``documents`` None: detect); a note
    when it is read as documents. Other sources are returned as they are."""
    if not is_plain_text(source):
        return source, []
    path = source.paths[0]
    chosen = looks_like_documents(path) if documents is None else documents
    if not chosen:
        return source, []
    why = "blank lines separate multi-line blocks" if documents is None else "as asked"
    return (dataclasses.replace(source, documents=True),
            [f"{path}: one document per blank-line-separated block ({why})"])


def is_plain_text(source: Source) -> bool:
    """A .txt file: its one column "text" is read whatever the field options say (they name
    the columns of the task's other data, e.g. of a --valid JSONL)."""
    return source.kind == "file" and file_format(source.paths[0]) == "txt"


def text_columns(names: list[str], task: str, fields: Fields, plain: bool = False) -> list[str]:
    """The columns whose texts become rows, in row order (see the module docstring);
    ``plain``: a .txt file's (:func:`is_plain_text`)."""
    if plain:
        return [TEXT]
    if task == "translate":
        langs = [c for c in (fields.src_lang, fields.tgt_lang) if c and c in names]
        if langs:
            return langs
        if not any(c in names for c in TEXT_FIELDS) and not fields.text_field:
            raise DataError(f"no language or text column found; the data has columns: {', '.join(names)}",
                            "pass --src and --tgt naming the language columns")
        return [_pick(names, fields.text_field, TEXT_FIELDS, "text", "--text-field")]
    if task == "summarize":
        doc = _pick(names, fields.src_field, SRC_FIELDS, "document", "--src-field")
        summary = (_pick(names, fields.tgt_field, (), "summary", "--tgt-field") if fields.tgt_field
                   else next((c for c in TGT_FIELDS if c in names), None))
        return [doc] + ([summary] if summary and summary != doc else [])
    return [_pick(names, fields.text_field, TEXT_FIELDS, "text", "--text-field")]


class TextRows:
    """Raw column batches ``{column: [values]}`` -> rows ``[(text,), ...]``, the columns chosen
    by :func:`text_columns` on the first batch."""

    def __init__(self, task: str, fields: Fields, plain: bool = False):
        self.task, self.fields = task, fields
        self.columns: list[str] | None = [TEXT] if plain else None

    def __call__(self, batch: dict) -> list[tuple[str]]:
        if "translation" in batch and batch["translation"]:  # the Hub's {"translation": {...}}
            batch = {k: [t[k] for t in batch["translation"]] for k in batch["translation"][0]}
        self.columns = self.columns or text_columns(list(batch), self.task, self.fields)
        for col in self.columns:
            odd = next((v for v in batch[col] if v is not None and not isinstance(v, str)), None)
            if odd is not None:
                raise DataError(f"field '{col}' holds {type(odd).__name__}, not text",
                                "point the field option at a text column")
        return [(t.strip(),) for texts in zip(*(batch[c] for c in self.columns), strict=True)
                for t in texts if t and t.strip()]


def normalize_text(ds: Dataset, task: str, fields: Fields, plain: bool = False) -> Dataset:
    """A raw Dataset -> pretraining rows: a Dataset with the one column "text"."""
    ds = _flatten_translation(ds)
    columns = text_columns(ds.column_names, task, fields, plain)
    for col in columns:
        dtype = getattr(ds.features[col], "dtype", type(ds.features[col]).__name__)
        if dtype not in TEXT_DTYPES:
            raise DataError(f"field '{col}' holds {dtype}, not text", "point the field option at a text column")
    rows = TextRows(task, fields, plain)
    hf = _hf()
    return ds.select_columns(columns).map(
        lambda b: {TEXT: [t for (t,) in rows(b)]}, batched=True, remove_columns=columns,
        features=hf.Features({TEXT: hf.Value("string")}))


def load_text_source(source: Source, task: str, fields: Fields) -> Dataset:
    """A located split's pretraining rows (read through `datasets`); an error when none."""
    ds = normalize_text(load_source(source), task, fields, is_plain_text(source))
    if len(ds) == 0:
        raise DataError(f"{source.describe()} has no text (all empty)", "check the fields hold text")
    return ds


def load_text_dataset(spec: str, task: str, fields: Fields | None = None, *, split: str = "train",
                      subset: str | None = None, documents: bool | None = None
                      ) -> tuple[Dataset, list[str]]:
    """One split of a SPEC as pretraining rows (a Dataset with the column "text") and notes on
    how it was read: e.g. for `attn tokenizer train` on raw text."""
    fields = fields or Fields()
    source, notes = resolve_documents(locate(spec, split, fields=fields, subset=subset), documents)
    return load_text_source(source, task, fields), notes
