"""A training run's data: the SPEC located, tokenized once into the cache, validation chosen.

    SPEC --locate--> files --identity + key--> cache entry (hit: open; miss: datasets load,
    normalize, tokenize, write) --> TokenStore (train) + examples (validation) + references

On a cache hit nothing is parsed or tokenized: the files' identity (size, mtime, content hash)
is checked against the entry and its files are opened. Validation is ``--valid``, else the
SPEC's own validation split, else a seeded hold-out of the training rows (at most 2,000, 1%).

Pretraining (``DataRequest.text_only``) reads the same way, through the same cache, but rows are
unlabelled texts (:mod:`text`): the train TokenStore has the one column "text" and yields
each row as a list of ids, and validation is a list of such lists (see :func:`load_run_data`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attn_cli.data import cachebuild
from attn_cli.data import store as store_mod
from attn_cli.data.cachebuild import CHILD_MIN_BYTES, build_in_child
from attn_cli.data.spec import Fields, Source, load_source, locate
from attn_cli.data.tasks import holdout_size, label_note, normalize
from attn_cli.data.stream import stream_rows
from attn_cli.data.text import load_text_source, resolve_documents, text_cost, text_limit
from attn_cli.data.tokenizer import Tokenizers
from attn_cli.errors import DataError

Note = Callable[[str], None]
Progress = Callable[[int, int], None]
SMALL_DATA = 1000  # below this many examples, validation reuses training examples (with a note)
REUSED_MAX = 200  # ... at most this many


@dataclass
class DataRequest:
    """Which data a run trains on and how it is tokenized and cached."""

    spec: str  # training data SPEC
    task: str  # translate, summarize or sentiment
    fields: Fields = field(default_factory=Fields)
    valid_spec: str | None = None  # validation SPEC (None: the SPEC's own split or a hold-out)
    split: str = "train"
    subset: str | None = None  # Hub configuration
    seed: int = 1  # hold-out draw
    max_len: int = 256  # ids per side kept (targets: max_len - 1)
    cache: Path | None = None  # --data-cache (None: $ATTN_CACHE or ~/.cache/attn)
    num_proc: int = field(default_factory=lambda: os.cpu_count() or 1)  # tokenizing processes
    text_only: bool = False  # pretraining: unlabelled text rows (data.text), labels never read
    documents: bool | None = None  # text_only: a .txt is blank-line-separated documents
    # (True), one text per line (False), or whichever its blank lines say (None)


@dataclass
class RunData:
    """What the Trainer reads: the training rows (read from the cache) and validation in memory."""

    train: store_mod.TokenStore
    valid: list  # (src_ids, tgt_ids) or (ids, label) tuples; text_only: id lists
    refs: list  # seq2seq: validation reference texts (or lists of them); [] for sentiment and text
    label_names: list[str] | None
    notes: list[str]
    truncated: int  # training rows cut to --max-len
    valid_reused: bool = False  # validation is training examples reused (small data), not held out


def valid_meta(data: RunData) -> dict:
    """What config.json's "data" records about validation besides its size: whether it is
    reused training examples ("valid_reused", only when it is) and, for sentiment, the share
    of its commonest label in % ("valid_majority": the accuracy of always answering it)."""
    meta: dict = {"valid_reused": True} if data.valid_reused else {}
    if data.label_names is not None and data.valid and isinstance(data.valid[0], tuple):
        counts = np.bincount([int(y) for _, y in data.valid])
        meta["valid_majority"] = round(100.0 * float(counts.max()) / len(data.valid), 2)
    return meta


REUSED = "reused training examples, not held out"  # the words for such validation, everywhere


def describe_valid(data: dict) -> str:
    """config.json's "data" validation, in words: reused training examples are never called
    held out (a score on them is not a held-out score)."""
    n = f"{data.get('valid_examples', 0):,}"
    if data.get("valid_reused"):
        return f"{n} {REUSED} (--valid SPEC gives a held-out score)"
    if data.get("valid"):
        return f"{data['valid']} ({n})"
    return f"held out ({n})"


def joined_note(data: dict) -> str:
    """What --concat did to the training examples (config.json's data), for `attn info` and the
    model card; empty for runs without the record (sentiment, pretraining, older runs)."""
    share = data.get("concat")
    if share is None:
        return ""
    return (f"; about {share:.0%} of training examples joined from 2-3 pairs (--concat {share:g})" if share
            else "; pairs trained one at a time (--concat 0)")


def holdout_rows(n: int, seed: int, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows) of n rows: the task's share (tasks.holdout_size) drawn with ``seed``."""
    k = holdout_size(n, task)
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(seed).choice(n, size=k, replace=False)] = True
    dtype = np.int32 if n < (1 << 31) else np.int64  # 4 bytes a row on any corpus that fits
    return np.flatnonzero(~held).astype(dtype), np.flatnonzero(held).astype(dtype)


def tokenizer_digest(toks: Tokenizers) -> str:
    """sha1 of the tokenizer model(s): a cache entry's ids belong to exactly these pieces."""
    return hashlib.sha1(toks.src.proto + b"\0" + (b"" if toks.joint else toks.tgt.proto)).hexdigest()


class Cache:
    """Opens or builds the entries of one run (train and validation) in one cache root."""

    def __init__(self, req: DataRequest, note: Note, progress: Progress | None = None):
        self.req, self.note, self.progress = req, note, progress
        self.root = store_mod.default_root(req.cache)
        cachebuild.check_writable(self.root)

    def key(self, source: Source, toks: Tokenizers, role: str, label_names: list[str] | None) -> dict:
        seq2seq = self.req.task != "sentiment" and not self.req.text_only
        return {"format": store_mod.FORMAT, "task": self.req.task, "role": role,
                "source": {"kind": source.kind, "split": source.split, "subset": source.subset,
                           "paths": [str(p.resolve()) for p in source.paths],
                           **({"hub": source.spec} if source.kind == "hub" else {}),
                           **({"documents": True} if source.documents else {})},
                "fields": {k: v for k, v in vars(self.req.fields).items() if v is not None},
                "tokenizer": tokenizer_digest(toks), "max_len": self.req.max_len,
                "label_names": label_names, "refs": role == "valid" and seq2seq,
                **({"int_labels": "sorted"} if self.req.task == "sentiment" and not self.req.text_only else {}),
                **({"text_only": True} if self.req.text_only else {})}

    def open(self, source: Source, toks: Tokenizers, role: str,
             rows: Callable[[], tuple[store_mod.Rows, list[str] | None]],
             label_names: list[str] | None = None, fingerprint: str | None = None) -> store_mod.TokenStore:
        """The entry for ``source``: opened when current, else (re)built from ``rows()``, which
        gives the normalized rows and their label names. ``fingerprint``: a Hub dataset's
        identity (local files are identified by their size, mtime and content hash)."""
        key = self.key(source, toks, role, label_names)
        directory = self.root / "tokenized" / store_mod.entry_name(key)
        identity = ([{"fingerprint": fingerprint}] if source.kind == "hub"
                    else [store_mod.file_identity(p) for p in source.paths])
        meta, why = store_mod.check_entry(directory, key)
        if meta is not None and meta.get("identity") == identity:
            return self._cached(directory, meta, source)
        if meta is not None:
            self.note(f"{source.describe()} changed since it was tokenized; tokenizing it again")
        elif why != "missing":
            self.note(f"the cached tokens of {source.describe()} are damaged ({why}); rebuilding them")
        with store_mod.entry_lock(directory):
            meta, _ = store_mod.check_entry(directory, key)  # another process may have built it
            if meta is not None and meta.get("identity") == identity:
                return self._cached(directory, meta, source)
            todo, names = rows()
            count = f"{todo.total:,} rows" if todo.total is not None else "the rows"
            self.note(f"tokenizing {count} of {source.describe()} (cached for next time in {self.root})")
            spec = self._build_spec(source, toks)
            big = todo.recipe is not None and sum(p.stat().st_size for p in source.paths) >= CHILD_MIN_BYTES
            try:
                if big:  # the build's memory leaves with the child process
                    meta = build_in_child(*todo.recipe, toks, spec, directory, key, identity, self.root,
                                          todo.total, self.progress)
                else:
                    meta = cachebuild.build_entry(todo, spec, directory, key, identity,
                                                  {"label_names": names}, self.progress)
            except OSError as e:
                raise cachebuild.write_failure(self.root, e) from None
        return store_mod.TokenStore(directory, meta)


    def _build_spec(self, source: Source, toks: Tokenizers) -> cachebuild.BuildSpec:
        req = self.req
        seq2seq = req.task != "sentiment" and not req.text_only
        limit = text_limit(req.task, req.max_len) if req.text_only else req.max_len
        return cachebuild.BuildSpec(
            columns=("src", "tgt") if seq2seq else ("text",), seq2seq=seq2seq, num_proc=req.num_proc,
            encoders={"src": toks.src, "tgt": toks.tgt, "text": toks.src},
            limits={"src": req.max_len, "tgt": req.max_len - 1, "text": limit},
            name=f"{source.spec} ({source.split})" if source.kind == "hub" else source.describe(),
            text_only=req.text_only, length_extra=text_cost(req.task) if req.text_only else 0)

    def _cached(self, directory: Path, meta: dict, source: Source) -> store_mod.TokenStore:
        self.note(f"tokenized data: cached ({meta['rows']:,} examples of {source.describe()})")
        return store_mod.TokenStore(directory, meta)


def dataset_rows(ds, task: str, refs: bool = False, text_only: bool = False) -> store_mod.Rows:
    """A normalized `datasets.Dataset` as rows to tokenize (with its reference texts);
    ``text_only``: pretraining rows (one "text" column) as 1-tuples."""
    if text_only:
        return store_mod.Rows((list(zip(b["text"])) for b in
                               ds.select_columns(["text"]).iter(batch_size=cachebuild.ENCODE_BATCH)), total=len(ds))
    cols = ["src", "tgt"] if task != "sentiment" else ["text", "label"]
    batches = (list(zip(b[cols[0]], b[cols[1]], strict=True))
               for b in ds.select_columns(cols).iter(batch_size=cachebuild.ENCODE_BATCH))
    kept = None
    if refs and task != "sentiment":
        kept = list(ds["references" if "references" in ds.column_names else "tgt"])
    return store_mod.Rows(batches, total=len(ds), refs=kept)


def _normalized(source: Source, req: DataRequest, names: list[str] | None = None) -> tuple:
    """(normalized Dataset, label names) of a located split: the task's columns, or
    pretraining rows (text_only)."""
    if req.text_only:
        return load_text_source(source, req.task, req.fields), None
    ds, names = normalize(load_source(source), req.task, req.fields, names)
    if len(ds) == 0:
        raise DataError(f"{source.spec} has no usable {req.task} examples (all empty)",
                        "check the fields hold text")
    return ds, names


def load_run_data(req: DataRequest, toks: Tokenizers | None,
                  train_tokenizer: Callable[[object], Tokenizers], note: Note,
                  progress: Progress | None = None) -> tuple[RunData, Tokenizers]:
    """Locate, tokenize (or open the cache) and split the run's data. ``toks`` None means
    ``train_tokenizer(normalized training Dataset)`` makes one (from the rows trained on:
    held-out rows excluded).

    With ``req.text_only`` (pretraining) the rows are unlabelled texts (:mod:`text`):
    ``train`` is a TokenStore whose ``gather(indices)`` gives a list of id lists (one text's
    piece ids each, no BOS/EOS, cut to :func:`text.text_limit`) and whose ``lengths``
    already hold each row's planned cost (:func:`text.text_cost`: ids, plus 1 for
    denoising); ``valid`` is a list of id lists, ``refs`` is [], ``label_names`` None, and the
    Dataset given to ``train_tokenizer`` has the one column "text" (one joint vocabulary:
    :func:`tasks.texts_for_tokenizer` gives (["text"], []) for it).
    """
    cache = Cache(req, note, progress)
    fields, task = req.fields, req.task
    source = locate(req.spec, req.split, fields=fields, subset=req.subset)
    notes: list[str] = []
    if req.text_only:
        source, notes = resolve_documents(source, req.documents)
    memo: dict = {}

    def train_dataset() -> tuple:
        if "train" not in memo:
            memo["train"] = _normalized(source, req)
            ds, names = memo["train"]
            if task == "sentiment" and not req.text_only and len(present := ds.unique("label")) < 2:
                raise DataError(f"the training data has only one label ({names[present[0]]})",
                                "sentiment needs at least two classes")
        return memo["train"]

    def train_rows() -> tuple:
        if "train" in memo or source.kind == "hub":  # already in Arrow: read it from there
            ds, names = train_dataset()
            return dataset_rows(ds, task, text_only=req.text_only), names
        return stream_rows(source, task, fields, req.text_only), None

    valid_source, found = _valid_source(req, source)
    notes += found
    if toks is None:
        ds, _ = train_dataset()
        held_out = valid_source is None and len(ds) >= SMALL_DATA
        toks = train_tokenizer(ds.select(holdout_rows(len(ds), req.seed, task)[0]) if held_out else ds)
    full = cache.open(source, toks, "train", train_rows,
                      fingerprint=train_dataset()[0]._fingerprint if source.kind == "hub" else None)
    names = full.meta.get("label_names")
    train = full
    if valid_source is not None:
        valid_store = _open_valid(cache, valid_source, toks, names)
        refs = (valid_store.refs() or []) if task != "sentiment" and not req.text_only else []
    else:  # drawn from the training rows: references are their decoded targets
        train, valid_store = _hold_out(full, req.seed, task, notes)
        refs = ([toks.tgt.decode(list(t)) for _, t in valid_store] if task != "sentiment" and not req.text_only
                else [])
    valid = list(valid_store)
    if task == "sentiment" and not req.text_only and len(present := np.unique(train.labels())) < 2:
        raise DataError(f"the training data has only one label ({names[int(present[0])]})",
                        "sentiment needs at least two classes")
    if not req.text_only and (labels := label_note(names)):
        notes.append(labels)
    return RunData(train=train, valid=valid, refs=refs, label_names=names, notes=notes,
                   truncated=int(full.meta.get("truncated", 0)),
                   valid_reused=valid_source is None and full.size < SMALL_DATA), toks


def _hold_out(full: store_mod.TokenStore, seed: int, task: str, notes: list[str]
              ) -> tuple[store_mod.TokenStore, store_mod.TokenStore]:
    """(train, validation) drawn from the training rows with ``seed``: the task's share held out
    (tasks.holdout_size), or, below SMALL_DATA rows, REUSED_MAX of them reused (too few to spare any)."""
    if full.size < SMALL_DATA:  # 1% would be a handful of examples: reuse some instead
        valid = full.subset(np.sort(np.random.default_rng(seed).permutation(full.size)[:REUSED_MAX]))
        notes.append(f"validation: {len(valid):,} of the {full.size:,} training examples, reused (not held "
                     "out: too few to spare a meaningful share); pass --valid for a held-out score")
        return full, valid
    keep, held = holdout_rows(full.size, seed, task)
    notes.append(f"validation: held out {len(held):,} examples of train (seed {seed}); "
                 "pass --valid to choose")
    return full.subset(keep), full.subset(held)


def _open_valid(cache: Cache, source: Source, toks: Tokenizers, names: list[str] | None
                ) -> store_mod.TokenStore:
    """The validation entry (read through `datasets`, labels mapped with the training names)."""
    req = cache.req
    memo: dict = {}

    def loaded() -> tuple:
        if "ds" not in memo:
            memo["ds"] = _normalized(source, req, names)
        return memo["ds"]

    def rows() -> tuple:
        ds, found = loaded()
        return dataset_rows(ds, req.task, refs=True, text_only=req.text_only), found

    return cache.open(source, toks, "valid", rows, names,
                      fingerprint=loaded()[0]._fingerprint if source.kind == "hub" else None)


def _valid_source(req: DataRequest, source: Source) -> tuple[Source | None, list[str]]:
    """The validation split's location and a note saying which; None means hold out. A single
    file or a parallel prefix is one split: it has no validation split of its own."""
    notes: list[str] = []
    if req.valid_spec is not None:
        found = locate(req.valid_spec, "validation", fields=req.fields, subset=req.subset)
        if req.text_only:
            found, notes = resolve_documents(found, req.documents)
        return found, [f"validation: {req.valid_spec}", *notes]
    if source.kind in ("file", "parallel") and not Path(os.path.expanduser(req.spec)).is_dir():
        return None, []
    found = locate(req.spec, "validation", fields=req.fields, subset=req.subset, required=False)
    if found is not None and found.kind == "hub" and load_source(found, required=False) is None:
        found = None
    if found is None:
        return None, []
    if req.text_only:
        found, notes = resolve_documents(found, req.documents)
    return found, [f"validation: the 'validation' split of {req.spec}", *notes]


def load_stream_data(req: DataRequest, toks: Tokenizers | None, cfg, note: Note) -> tuple[RunData, Tokenizers]:
    """--stream: the training SPEC as a :class:`StreamSource` (read while training) and the
    validation data through the cache as usual (validation is never streamed). With
    ``req.text_only`` the stream's examples are id lists and validation is as in
    :func:`load_run_data`."""
    from attn_cli.data.stream import StreamSource
    from attn_cli.errors import AttnError

    if toks is None:
        raise AttnError("--stream needs a tokenizer: training one would read the whole stream first",
                        "train one on a sample (attn tokenizer train --max-sentences N) and pass --tokenizer DIR")
    source = locate(req.spec, req.split, fields=req.fields, subset=req.subset)
    notes: list[str] = []
    if req.text_only:
        source, notes = resolve_documents(source, req.documents)
    valid_source, found = _valid_source(req, source)
    notes += found
    if valid_source is None:
        raise AttnError("--stream needs validation data that is not streamed",
                        "pass --valid SPEC (a few thousand examples)")
    if cfg.epochs is not None and source.kind == "hub":
        raise AttnError("--epochs cannot be counted on a Hub stream (its length is unknown)",
                        "use --max-steps or --time-budget with --stream")
    cache = Cache(req, note)
    valid_store = _open_valid(cache, valid_source, toks, None)
    names = valid_store.meta.get("label_names")
    stream = StreamSource(source=source, task=req.task, fields=req.fields, toks=toks, max_len=req.max_len,
                          max_tokens=cfg.max_tokens, buffer=cfg.shuffle_buffer, seed=cfg.seed,
                          concat=cfg.concat,
                          label_names=names, text_only=req.text_only)
    notes.append(f"streaming {source.describe()}: shuffled and length-bucketed "
                 f"{cfg.shuffle_buffer:,} rows at a time (--shuffle-buffer)")
    refs = (valid_store.refs() or []) if req.task != "sentiment" and not req.text_only else []
    if not req.text_only and (labels := label_note(names)):
        notes.append(labels)
    return RunData(train=stream, valid=list(valid_store), refs=refs, label_names=names, notes=notes,
                   truncated=0), toks
