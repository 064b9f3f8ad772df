"""SentencePiece tokenizers: train from an iterator over the data, save, load, encode, decode.

Special ids are fixed for every model: pad 0, unk 1, bos 2, eos 3. Translation uses one joint
vocabulary by default (it lets the model tie source, target and output embeddings); with
``joint=False`` each side gets its own model (``tokenizer.model`` and ``tokenizer.tgt.model``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sentencepiece as spm

from attn_cli.data.spec import first_line

if TYPE_CHECKING:
    from datasets import Dataset
from attn_cli.errors import DataError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SRC_FILE, TGT_FILE, INFO_FILE = "tokenizer.model", "tokenizer.tgt.model", "tokenizer.json"


@dataclass
class TokenizerConfig:
    vocab_size: int = 8000  # pieces per vocabulary, specials included
    model_type: str = "unigram"  # "unigram" or "bpe"
    joint: bool = True  # one vocabulary for source and target (seq2seq only)
    max_sentences: int = 2_000_000  # sample at most this many sentences per vocabulary
    character_coverage: float = 0.9995  # rarer characters fall back to bytes
    seed: int = 0  # sampling seed
    lowercase: bool = False  # fold case when normalizing (SentencePiece's nmt_nfkc_cf), also when encoding

    def __post_init__(self):
        if self.model_type not in ("unigram", "bpe"):
            raise DataError(f"unknown model type '{self.model_type}'", "use unigram or bpe")
        if self.vocab_size < 300:
            raise DataError(f"--vocab-size {self.vocab_size} is too small",
                            "use at least 300 (256 byte pieces + specials + characters)")
        if self.max_sentences < 1:
            raise DataError("--max-sentences must be positive", "e.g. --max-sentences 200000")


class Tokenizer:
    """One SentencePiece model. Encoding adds no BOS/EOS: the batching code does."""

    def __init__(self, proto: bytes):
        self.proto = proto
        self.sp = spm.SentencePieceProcessor(model_proto=proto)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, num_threads=os.cpu_count() or 1)

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i > EOS_ID])


@dataclass
class Tokenizers:
    """The source and target tokenizers (the same object when the vocabulary is joint)."""

    src: Tokenizer
    tgt: Tokenizer
    config: TokenizerConfig

    @property
    def joint(self) -> bool:
        return self.src is self.tgt

    def save(self, directory: Path) -> None:
        """Write the model file(s) and tokenizer.json into an existing directory, atomically."""
        from attn_cli.rundir import atomic_write_bytes

        atomic_write_bytes(directory / SRC_FILE, self.src.proto)
        if not self.joint:
            atomic_write_bytes(directory / TGT_FILE, self.tgt.proto)
        info = {**asdict(self.config), "joint": self.joint, "src_vocab_size": self.src.vocab_size,
                "tgt_vocab_size": self.tgt.vocab_size, "pad_id": PAD_ID, "unk_id": UNK_ID,
                "bos_id": BOS_ID, "eos_id": EOS_ID}
        atomic_write_bytes(directory / INFO_FILE, json.dumps(info, indent=2).encode())

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizers:
        directory = Path(directory)
        if not (directory / SRC_FILE).is_file():
            raise DataError(f"no tokenizer in {directory} (missing {SRC_FILE})",
                            "point to a directory made by `attn tokenizer train` or `attn train`")
        try:
            src = Tokenizer((directory / SRC_FILE).read_bytes())
            tgt_path = directory / TGT_FILE
            tgt = Tokenizer(tgt_path.read_bytes()) if tgt_path.is_file() else src
        except (RuntimeError, OSError) as e:
            raise DataError(f"cannot load the tokenizer in {directory}: {e}",
                            "retrain it with `attn tokenizer train`") from None
        config = TokenizerConfig()
        if (directory / INFO_FILE).is_file():
            try:
                info = json.loads((directory / INFO_FILE).read_text(encoding="utf-8"))
                if not isinstance(info, dict):
                    raise ValueError("it must hold a JSON object")
                config = TokenizerConfig(**{k: info[k] for k in asdict(config) if k in info})
            except (ValueError, TypeError, AttributeError, OSError, DataError) as e:
                raise DataError(f"{directory / INFO_FILE} is damaged: {first_line(e)}",
                                "restore it, or retrain with `attn tokenizer train`") from None
        return cls(src=src, tgt=tgt, config=config)


def _sample_sentences(data: Dataset, columns: list[str], limit: int, seed: int,
                      on_progress: Callable[[int, int], None] | None) -> Iterator[str]:
    """Yield non-empty texts of ``columns`` from at most ``limit`` sentences, sampled by row."""
    n_rows = len(data)
    rows_wanted = max(1, limit // max(1, len(columns)))
    if rows_wanted < n_rows:
        indices = sorted(random.Random(seed).sample(range(n_rows), rows_wanted))
        data = data.select(indices)
    total, done = len(data) * len(columns), 0
    for batch in data.select_columns(columns).iter(batch_size=4096):
        for col in columns:
            for text in batch[col]:
                if text:
                    yield text
        done += len(batch[columns[0]]) * len(columns)
        if on_progress:
            on_progress(done, total)


def _train_one(sentences: Iterator[str], cfg: TokenizerConfig, verbose: bool) -> bytes:
    model = io.BytesIO()
    kwargs = dict(
        sentence_iterator=sentences, model_writer=model, vocab_size=cfg.vocab_size,
        model_type=cfg.model_type, character_coverage=cfg.character_coverage,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, byte_fallback=True,
        split_digits=True, normalization_rule_name="nmt_nfkc_cf" if cfg.lowercase else "nmt_nfkc",
        num_threads=os.cpu_count() or 1, input_sentence_size=0,
        max_sentence_length=1 << 14, train_extremely_large_corpus=False,
    )
    try:
        if verbose:
            spm.SentencePieceTrainer.train(**kwargs)
        else:
            with _quiet_stderr_fd():
                spm.SentencePieceTrainer.train(**kwargs)
    except RuntimeError as e:
        limit = re.search(r"<= (\d+)", str(e))
        if "too high" in str(e) and limit:
            raise VocabTooLarge(int(limit.group(1)), cfg.vocab_size) from None
        if "Vocabulary size is smaller than required_chars" in str(e):
            raise DataError(f"--vocab-size {cfg.vocab_size} is smaller than the number of distinct "
                            "characters in the data", "raise --vocab-size") from None
        raise DataError(f"SentencePiece failed: {first_line(e)}", "check the data") from None
    return model.getvalue()


@contextlib.contextmanager
def _quiet_stderr_fd():
    """Silence SentencePiece's C++ log, which writes straight to file descriptor 2."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class VocabTooLarge(DataError):
    def __init__(self, maximum: int, asked: int):
        super().__init__(f"--vocab-size {asked} is too large for this data: SentencePiece allows at "
                         f"most {maximum}", f"use --vocab-size {maximum} or less, or more data")
        self.maximum = maximum


def train_tokenizers(data: Dataset, src_columns: list[str], tgt_columns: list[str],
                     cfg: TokenizerConfig, *, verbose: bool = False,
                     on_progress: Callable[[str, int, int], None] | None = None) -> Tokenizers:
    """Train the tokenizer(s) for normalized data. ``on_progress(stage, done, total)``."""
    joint = cfg.joint or not tgt_columns
    sides = [("joint" if tgt_columns else "text", src_columns + tgt_columns)] if joint else \
        [("source", src_columns), ("target", tgt_columns)]
    models = []
    for name, cols in sides:
        def report(done: int, total: int, name: str = name) -> None:
            if on_progress:
                on_progress(f"reading {name} sentences", done, total)
        sentences = _sample_sentences(data, cols, cfg.max_sentences, cfg.seed, report)
        models.append(Tokenizer(_train_one(sentences, cfg, verbose)))
        if on_progress:
            on_progress(f"trained {name} vocabulary", 1, 1)
    cfg = TokenizerConfig(**{**asdict(cfg), "joint": joint})
    return Tokenizers(src=models[0], tgt=models[-1], config=cfg)
