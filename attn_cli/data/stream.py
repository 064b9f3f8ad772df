"""--stream: read, tokenize and batch training data on the fly, for corpora too big to cache.

    SPEC --datasets streaming--> rows --buffer of N (--shuffle-buffer)--> tokenize --> plan
    (length-bucketed, shuffled, seeded) --> batches; then the next N rows

Nothing is written to disk and memory holds one buffer. The position in the stream is
``(epoch, consumed, position)``: ``consumed`` rows were read before the current buffer and
``position`` of its batches are done. A buffer is a pure function of its rows, the seed, the
epoch and ``consumed``, so ``--resume`` re-reads the stream to ``consumed`` (without
tokenizing it), rebuilds the same buffer and continues at batch ``position``. Under DDP every
rank reads the whole stream and trains on its part of each global batch (as the cached path
does), so N processes take the same steps as one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attn_cli.data.batching import example_lengths, plan_batches
from attn_cli.data.joining import join_rows, plan_joins
from attn_cli.data.spec import (
    BUILDERS,
    Fields,
    Source,
    _first_bad_json_line,
    _hf,
    builder_options,
    check_utf8,
    file_format,
    first_line,
)
from attn_cli.data.store import Rows
from attn_cli.data.tasks import (
    LABEL_FIELDS,
    SRC_FIELDS,
    TEXT_FIELDS,
    TGT_FIELDS,
    _pick,
    int_label_index,
    int_label_names,
)
from attn_cli.data.text import TextRows, is_plain_text, text_cost, text_limit
from attn_cli.data.tokenizer import Tokenizers
from attn_cli.errors import DataError

READ_BATCH = 10_000  # rows read from the stream at a time


def raw_batches(source: Source) -> Iterator[dict]:
    """Column batches ``{name: [values]}`` of a located split, read in order with bounded
    memory (`datasets` streaming; parallel files line by line)."""
    if source.kind == "parallel":
        yield from _parallel_batches(source.paths)
        return
    if source.kind == "hub":
        ds = _hf().load_dataset(source.spec, source.subset, split=source.split, streaming=True)
        yield from _columns(ds)
        return
    path = source.paths[0]
    ext = file_format(path)
    if ext != "parquet":
        check_utf8(path)
    ds = _hf().load_dataset(BUILDERS[ext], data_files=str(path), split="train", streaming=True,
                            **builder_options(ext, source.documents))
    try:
        yield from _columns(ds)
    except Exception as e:  # datasets wraps parser errors in its own types
        bad = _first_bad_json_line(path) if ext in ("jsonl", "json") else None
        if bad is not None:
            raise DataError(f"{path} line {bad} is not valid JSON", "fix or remove that line") from None
        raise DataError(f"could not parse {path}: {first_line(e.__cause__ or e)}", f"check it is valid {ext}") from None


def _columns(ds) -> Iterator[dict]:
    """A streaming dataset's batches as ``{column: [values]}``, read as Arrow tables (about 3x
    faster than datasets' own per-example batches)."""
    for table in ds.with_format("arrow").iter(batch_size=READ_BATCH):
        yield {name: table.column(name).to_pylist() for name in table.column_names}


class Normalizer:
    """Raw column batches -> normalized pairs: (src, tgt) texts, or (text, label code); rows
    with an empty text are dropped, as :func:`tasks.normalize` does.

    Sentiment labels map through ``label_names`` when given (an unknown label is an error);
    without them, labels get codes in order of appearance and :meth:`labels` gives the sorted
    names and the code -> class table at the end (integers as :func:`tasks.int_label_names`).
    """

    def __init__(self, task: str, fields: Fields, label_names: list[str] | None = None):
        self.task, self.fields, self.names = task, fields, label_names
        self.codes: dict = {}  # label -> code (discovery) or label name -> class id (given names)
        if label_names is not None:
            self.codes = {n: i for i, n in enumerate(label_names)}
        self.index = int_label_index(label_names) if label_names is not None else None  # int -> class
        self.kinds: set[str] = set()  # "str" / "int" labels seen while discovering
        self.cols: tuple[str, str] | None = None

    def _columns(self, names: list[str]) -> tuple[str, str]:
        f = self.fields
        if self.task == "translate":
            if not (f.src_lang and f.tgt_lang):
                raise DataError(f"translation needs the language codes; the data has columns: {', '.join(names)}",
                                "pass --src and --tgt, e.g. --src de --tgt en")
            return (_pick(names, f.src_lang, (), "source", "--src"), _pick(names, f.tgt_lang, (), "target", "--tgt"))
        if self.task == "summarize":
            return (_pick(names, f.src_field, SRC_FIELDS, "document", "--src-field"),
                    _pick(names, f.tgt_field, TGT_FIELDS, "summary", "--tgt-field"))
        return (_pick(names, f.text_field, TEXT_FIELDS, "text", "--text-field"),
                _pick(names, f.label_field, LABEL_FIELDS, "label", "--label-field"))

    def __call__(self, batch: dict) -> list[tuple]:
        if "translation" in batch and batch["translation"]:  # the Hub's {"translation": {...}}
            batch = {k: [t[k] for t in batch["translation"]] for k in batch["translation"][0]}
        self.cols = self.cols or self._columns(list(batch))
        a, b = self.cols
        for col in (a, b) if self.task != "sentiment" else (a,):
            odd = next((v for v in batch[col] if v is not None and not isinstance(v, str)), None)
            if odd is not None:
                raise DataError(f"field '{col}' holds {type(odd).__name__}, not text",
                                "point the field option at a text column")
        if self.task != "sentiment":
            return [(s, t) for s, t in zip(batch[a], batch[b], strict=True)
                    if s and s.strip() and t and t.strip()]
        return [(text, self._label(y)) for text, y in zip(batch[a], batch[b], strict=True)
                if text and text.strip()]

    def _label(self, y) -> int:
        if self.names is not None:
            code = self.codes.get(y) if isinstance(y, str) else y if self.index is None else self.index.get(y)
            if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code < len(self.names):
                raise DataError(f"label {y!r} is not among the labels {self.names}",
                                "give --valid data with every label")
            return code
        if y is None:
            raise DataError("some examples have no label", "give every example a label")
        if isinstance(y, bool) or not isinstance(y, (int, str)):
            raise DataError(f"labels must be all integers or all strings (found {y!r})",
                            "use 0/1/... or names like positive/negative")
        self.kinds.add(type(y).__name__)
        if len(self.kinds) > 1:
            raise DataError("labels must be all integers or all strings (found both)",
                            "use 0/1/... or names like positive/negative")
        if y not in self.codes:
            int_label_names([y] if isinstance(y, int) else [], self.fields.num_labels)  # range checks
            if isinstance(y, str) and self.fields.num_labels is not None:
                raise DataError("--num-labels keeps integer labels, but these labels are names",
                                "leave out --num-labels")
        return self.codes.setdefault(y, len(self.codes))

    def labels(self) -> tuple[list[str] | None, np.ndarray | None]:
        """(label names, code -> class id table or None) once every batch was read."""
        if self.task != "sentiment":
            return None, None
        if self.names is not None:
            return self.names, None
        if "str" in self.kinds:
            names = sorted(self.codes)
            index = {n: i for i, n in enumerate(names)}
        else:
            names = int_label_names(self.codes, self.fields.num_labels)
            index = int_label_index(names)
        table = np.empty(len(self.codes), dtype=np.int64)
        for label, code in self.codes.items():
            table[code] = index[label]
        return names, table


@dataclass
class StreamSource:
    """The training stream of one run: where it comes from and how it is cut into batches."""

    source: Source
    task: str
    fields: Fields
    toks: Tokenizers
    max_len: int
    max_tokens: int
    buffer: int  # rows per shuffle buffer
    seed: int
    label_names: list[str] | None = None  # sentiment: names from the validation data
    text_only: bool = False  # pretraining: each example is one text's ids (list[int]), cut as
    # the cache cuts them (:func:`text.text_limit`)
    concat: float = 0.0  # --concat: share of a buffer's examples joined from 2-3 pairs (seq2seq)

    @property
    def seq2seq(self) -> bool:
        return self.task != "sentiment" and not self.text_only

    def _buffers(self, skip: int) -> Iterator[tuple[int, list[tuple]]]:
        """(rows read before it, its normalized rows) for each buffer of ``buffer`` raw rows
        after the first ``skip`` rows (read, not tokenized); the last one may be short."""
        normalize = (TextRows(self.task, self.fields, is_plain_text(self.source)) if self.text_only
                     else Normalizer(self.task, self.fields, self.label_names))
        read, start, buf = 0, skip, None
        for batch in raw_batches(self.source):
            n = len(next(iter(batch.values())))
            lo = min(max(0, skip - read), n)
            read += n
            if lo == n:
                continue
            if buf is None:
                buf = {k: [] for k in batch}
            for k, v in batch.items():
                buf[k].extend(v[lo:])
            while len(next(iter(buf.values()))) >= self.buffer:
                yield start, normalize({k: v[:self.buffer] for k, v in buf.items()})
                buf = {k: v[self.buffer:] for k, v in buf.items()}
                start += self.buffer
        if buf is not None and buf[next(iter(buf))]:
            yield start, normalize(buf)

    def _encode(self, pairs: list[tuple]) -> list[tuple]:
        """Tokenized examples as the training code wants them (ids cut to --max-len)."""
        if not pairs:
            return []
        if self.text_only:
            limit = text_limit(self.task, self.max_len)
            return [ids[:limit] for ids in self.toks.src.encode_batch([t for (t,) in pairs])]
        first, second = zip(*pairs, strict=True)
        src = self.toks.src.encode_batch(list(first))
        if self.seq2seq:
            tgt = self.toks.tgt.encode_batch(list(second))
            return [(s[:self.max_len], t[:self.max_len - 1]) for s, t in zip(src, tgt, strict=True)]
        return [(s[:self.max_len], y) for s, y in zip(src, second, strict=True)]

    def _join(self, examples: list[tuple], start: int, epoch: int) -> list[tuple]:
        """The buffer's examples with about ``concat`` of them joined (:mod:`data.joining`),
        drawn from the seed, the epoch and the buffer's place in the stream."""
        if not examples or self.concat <= 0 or not self.seq2seq:
            return examples
        src, tgt = (np.asarray([len(x[side]) for x in examples], dtype=np.int32) for side in (0, 1))
        joins = plan_joins(src, tgt, self.concat, self.max_len, seed=self.seed * 1_000_003 + start, epoch=epoch)
        flat, spans = joins.expand(range(len(joins)))
        return join_rows([examples[i] for i in flat], spans)

    def batches(self, epoch: int, consumed: int = 0, position: int = 0
                ) -> Iterator[tuple[int, int, list[tuple]]]:
        """``(consumed, position after, examples)`` for every global batch of ``epoch`` from
        the stream position ``(consumed, position)`` on."""
        for start, pairs in self._buffers(consumed):
            examples = self._join(self._encode(pairs), start, epoch)
            if examples:
                lengths = (np.asarray([len(x) for x in examples]) + text_cost(self.task) if self.text_only
                           else np.asarray(example_lengths(examples, self.seq2seq)))  # (n,)
                plan = plan_batches(lengths, self.max_tokens, seed=self.seed * 1_000_003 + start, epoch=epoch)
                for k in range(position, len(plan)):
                    yield start, k + 1, [examples[i] for i in plan[k].tolist()]
            position = 0


def _parallel_batches(paths: tuple[Path, ...]) -> Iterator[dict]:
    """Line-aligned ``prefix.src`` + ``prefix.tgt`` read together, READ_BATCH lines at a time."""
    names = [p.name.rsplit(".", 1)[1] for p in paths]
    for p in paths:
        check_utf8(p)
    with open(paths[0], encoding="utf-8") as a, open(paths[1], encoding="utf-8") as b:
        while True:
            left = [line.rstrip("\n") for line in itertools.islice(a, READ_BATCH)]
            right = [line.rstrip("\n") for line in itertools.islice(b, READ_BATCH)]
            if len(left) != len(right):
                raise DataError(f"parallel files differ in length: {paths[0]} and {paths[1]}",
                                "the two files must be line-aligned")
            if not left:
                return
            yield {names[0]: left, names[1]: right}


def stream_rows(source: Source, task: str, fields: Fields, text_only: bool = False) -> Rows:
    """A local file read and normalized batch by batch: no Arrow copy of it is written, and
    memory holds one batch (the way a corpus larger than RAM gets into the cache).
    ``text_only``: pretraining rows ``(text,)`` (:class:`text.TextRows`)."""
    if text_only:
        rows = TextRows(task, fields, is_plain_text(source))
        return Rows((rows(b) for b in raw_batches(source)), total=_text_total(source),
                    recipe=(source, task, fields, True))
    normalize = Normalizer(task, fields)
    return Rows((normalize(b) for b in raw_batches(source)), total=_count_lines(source),
                          labels=normalize.labels, recipe=(source, task, fields, False))


def _text_total(source: Source) -> int | None:
    """Pretraining rows of a source, when its lines say: a .txt read by lines (one row each),
    a parallel prefix (two); None otherwise (documents, or columns not yet known)."""
    if source.kind == "parallel":
        lines = _count_lines(source)
        return None if lines is None else 2 * lines
    if source.documents or file_format(source.paths[0]) != "txt":
        return None
    return _count_lines(source)


def _count_lines(source: Source) -> int | None:
    """Rows of a one-row-a-line file (JSON lines, text, parallel text), counted in 4 MiB
    chunks (about 0.3 s a GB); None for other formats."""
    path = source.paths[0]
    if path.name.lower().endswith(".gz") or source.documents or (
            source.kind == "file" and path.name.lower().rsplit(".", 1)[-1] not in ("jsonl", "txt")):
        return None
    lines, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")
