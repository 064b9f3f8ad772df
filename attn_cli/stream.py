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

from .batching import plan_batches
from .data import (LABEL_FIELDS, SRC_FIELDS, TEXT_FIELDS, TGT_FIELDS, Fields, Source, _hf, _pick,
                   check_utf8, file_format, BUILDERS)
from .errors import DataError
from .tokenizer import Tokenizers

READ_BATCH = 10_000  # rows read from the stream at a time


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

    @property
    def seq2seq(self) -> bool:
        return self.task != "sentiment"

    def rows(self) -> Iterator[dict]:
        """Column batches ``{name: [values]}`` of the raw stream, in file order."""
        src = self.source
        if src.kind == "parallel":
            yield from _parallel_batches(src.paths)
            return
        if src.kind == "file":
            path = src.paths[0]
            if file_format(path) != "parquet":
                check_utf8(path)
            kwargs = {"delimiter": "\t"} if file_format(path) == "tsv" else {}
            ds = _hf().load_dataset(BUILDERS[file_format(path)], data_files=str(path), split="train",
                                    streaming=True, **kwargs)
        else:
            ds = _hf().load_dataset(src.spec, src.subset, split=src.split, streaming=True)
        yield from ds.iter(batch_size=READ_BATCH)

    def _columns(self, names: list[str]) -> tuple[str, str]:
        f = self.fields
        if self.task == "translate":
            return (_pick(names, f.src_lang, (), "source", "--src"), _pick(names, f.tgt_lang, (), "target", "--tgt"))
        if self.task == "summarize":
            return (_pick(names, f.src_field, SRC_FIELDS, "document", "--src-field"),
                    _pick(names, f.tgt_field, TGT_FIELDS, "summary", "--tgt-field"))
        return (_pick(names, f.text_field, TEXT_FIELDS, "text", "--text-field"),
                _pick(names, f.label_field, LABEL_FIELDS, "label", "--label-field"))

    def _pairs(self, batch: dict) -> list[tuple]:
        """A column batch -> normalized (src, tgt) or (text, label index) rows, empties dropped."""
        if "translation" in batch:  # the Hub's {"translation": {"de": ..., "en": ...}}
            batch = {k: [t[k] for t in batch["translation"]] for k in batch["translation"][0]}
        a, b = self._columns(list(batch))
        if self.seq2seq:
            return [(s, t) for s, t in zip(batch[a], batch[b], strict=True)
                    if s and s.strip() and t and t.strip()]
        index = {n: i for i, n in enumerate(self.label_names or [])}
        out = []
        for text, label in zip(batch[a], batch[b], strict=True):
            if not (text and text.strip()):
                continue
            y = index.get(label) if isinstance(label, str) else label
            if not isinstance(y, int) or not 0 <= y < len(index):
                raise DataError(f"label {label!r} in the stream is not among the validation labels "
                                f"{self.label_names}", "give --valid data with every label")
            out.append((text, y))
        return out

    def _buffers(self, skip: int) -> Iterator[tuple[int, list[tuple]]]:
        """(rows read before it, its normalized rows) for each buffer of ``buffer`` raw rows
        after the first ``skip`` rows (read, not tokenized); the last one may be short."""
        read, start, buf = 0, skip, None
        for batch in self.rows():
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
                yield start, self._pairs({k: v[:self.buffer] for k, v in buf.items()})
                buf = {k: v[self.buffer:] for k, v in buf.items()}
                start += self.buffer
        if buf is not None and buf[next(iter(buf))]:
            yield start, self._pairs(buf)

    def _encode(self, pairs: list[tuple]) -> list[tuple]:
        """Tokenized examples as the training code wants them (ids cut to --max-len)."""
        if not pairs:
            return []
        first, second = zip(*pairs, strict=True)
        src = self.toks.src.encode_batch(list(first))
        if self.seq2seq:
            tgt = self.toks.tgt.encode_batch(list(second))
            return [(s[:self.max_len], t[:self.max_len - 1]) for s, t in zip(src, tgt, strict=True)]
        return [(s[:self.max_len], y) for s, y in zip(src, second, strict=True)]

    def batches(self, epoch: int, consumed: int = 0, position: int = 0
                ) -> Iterator[tuple[int, int, list[tuple]]]:
        """``(consumed, position after, examples)`` for every global batch of ``epoch`` from
        the stream position ``(consumed, position)`` on."""
        for start, pairs in self._buffers(consumed):
            examples = self._encode(pairs)
            if examples:
                lengths = np.fromiter(((max(len(s), len(t) + 1) if self.seq2seq else len(s))
                                       for s, t in examples), dtype=np.int64, count=len(examples))
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
