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
from array import array
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm
from datasets import Dataset

from .data import first_line
from .errors import DataError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SRC_FILE, TGT_FILE, INFO_FILE = "tokenizer.model", "tokenizer.tgt.model", "tokenizer.json"
SAMPLE_NBEST = 32  # --subword-sampling draws each word's segmentation from its 32 best
SAMPLE_MAX_WORD = 64  # ... and keeps the best one of longer "words" (URLs, "*****...")


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

    def check_sampling(self) -> None:
        """Raise DataError unless the model can give n-best segmentations (unigram models can)."""
        self.nbest("a")

    def nbest(self, word: str) -> list[list[int]]:
        """The ``SAMPLE_NBEST`` best segmentations of ``word``, best first."""
        try:
            return self.sp.nbest_encode_as_ids(word, nbest_size=SAMPLE_NBEST)
        except RuntimeError as e:
            raise DataError(f"--subword-sampling needs a unigram tokenizer: {first_line(e)}",
                            "train the tokenizer with --model-type unigram (the default)") from None

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i > EOS_ID])


class SubwordSampler:
    """Subword regularization (Kudo, 2018) for a fixed list of texts: ``sample(seed)`` draws a
    new segmentation of every text, the same for the same seed in every process.

    SentencePiece's own sampling (``enable_sampling``) is not: with sentencepiece 0.2.3 the same
    ``set_random_generator_seed`` gives other segmentations in another process, which would
    break ``--resume`` and hand DDP ranks different data. So the draw happens here, with numpy.
    Unigram pieces never span a space, so a text's segmentation is its space-separated words'
    segmentations in a row. Each distinct word's ``SAMPLE_NBEST`` best segmentations are found
    once (words over ``SAMPLE_MAX_WORD`` characters keep their best); each occurrence then draws
    one with probability proportional to P(segmentation)^alpha (from the pieces'
    log-probabilities). A text whose words' best segmentations do not add up to its own best one
    (an unusual normalization) always keeps its best one.

    Packed tables (W distinct words, K candidates in all, O word occurrences, N texts):
    ``ids`` every candidate's pieces end to end, ``cand_start``/``cand_end`` (K,) where each
    candidate lies in ``ids``, ``cum`` (K,) each word's cumulative probabilities plus the word's
    index (so one ``searchsorted`` serves all words), ``word_first`` (W + 1,) each word's first
    candidate, ``occ`` (O,) the word of each occurrence, ``text_occ`` (N + 1,) each text's
    first occurrence.
    """

    def __init__(self, tok: Tokenizer, texts: list[str], alpha: float) -> None:
        tok.check_sampling()
        self.best = tok.encode_batch(texts)
        index: dict[str, int] = {}
        occ: list[int] = []
        text_occ = [0]
        self.fixed: list[bool] = []  # texts that keep their best segmentation
        firsts: list[list[int]] = []  # each word's best segmentation
        ids, cand_len = array("i"), array("q")  # compact while building: 10^7 ids for IMDB
        cum: list[np.ndarray] = []
        word_first = [0]
        with _quiet_stderr_fd():  # "Too big agenda size" for words like "*****...*"
            for text, best in zip(texts, self.best, strict=True):
                words = [w for w in text.split(" ") if w]
                for w in words:
                    if w not in index:
                        index[w] = len(index)
                        cands, probs = self._candidates(tok, w, alpha)
                        cum.append(np.cumsum(probs) + index[w])
                        firsts.append(cands[0])
                        for c in cands:
                            ids.extend(c)
                            cand_len.append(len(c))
                        word_first.append(word_first[-1] + len(cands))
                here = [index[w] for w in words]
                self.fixed.append([i for k in here for i in firsts[k]] != best)
                occ += here
                text_occ.append(len(occ))
        self.ids = np.frombuffer(ids, dtype=np.int32)
        self.cand_end = np.cumsum(np.frombuffer(cand_len, dtype=np.int64))
        self.cand_start = self.cand_end - np.frombuffer(cand_len, dtype=np.int64)
        self.cum = np.concatenate(cum) if cum else np.zeros(0)
        self.word_first = np.array(word_first, dtype=np.int64)
        self.occ = np.array(occ, dtype=np.int64)
        self.text_occ = np.array(text_occ, dtype=np.int64)

    @property
    def n_words(self) -> int:
        """W, the distinct words whose segmentations are drawn."""
        return len(self.word_first) - 1

    @staticmethod
    def _candidates(tok: Tokenizer, word: str, alpha: float) -> tuple[list[list[int]], np.ndarray]:
        """The word's best segmentations, best first, and their probabilities (∝ P^alpha)."""
        cands = (tok.nbest(word) if len(word) <= SAMPLE_MAX_WORD else []) or [tok.encode(word)]
        scores = alpha * np.array([sum(tok.sp.get_score(i) for i in c) for c in cands])
        probs = np.exp(scores - scores.max())
        return cands, probs / probs.sum()

    def sample(self, seed: int) -> list[list[int]]:
        """One segmentation per text, drawn with numpy's generator seeded with ``seed``."""
        if not self.best:
            return []
        rng = np.random.default_rng(seed % (1 << 64))  # numpy refuses negative seeds
        u = self.occ + rng.random(len(self.occ))  # (O,): a uniform draw inside each word's range
        pick = np.searchsorted(self.cum, u, side="right")  # (O,) candidate index
        # the last candidate of each word where rounding leaves its sum just below 1
        pick = np.minimum(pick, self.word_first[self.occ + 1] - 1)
        start, end = self.cand_start[pick], self.cand_end[pick]  # (O,)
        lengths = end - start
        ends = np.cumsum(lengths)  # (O,): where each occurrence's pieces end in the output
        flat = self.ids[np.repeat(start - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)]
        bounds = np.concatenate([[0], ends])[self.text_occ]  # (N + 1,)
        out = np.split(flat, bounds[1:-1])
        return [best if fixed else o.tolist()
                for o, best, fixed in zip(out, self.best, self.fixed, strict=True)]


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
        from .checkpoint import atomic_write_bytes

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
