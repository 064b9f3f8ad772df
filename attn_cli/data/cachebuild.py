"""Writing a cache entry (:mod:`store` is the format and its reading side).

:func:`build_entry` tokenizes rows into a new entry: written beside its final name under a
temporary one, then renamed into place, so a reader never sees a half-written entry; a failure
(bad data, disk full, Ctrl-C) removes the partial entry.

Worker processes (``--num-proc``). Building a cache is about half SentencePiece encoding and half
Python work around it (turning id lists into flat arrays). Both hold the GIL, so threads do not
help; processes do. The process that reads the file hands each batch's texts to a pool of
``workers`` spawned processes and takes the flat ids back in order, so reading, encoding and
writing overlap. At most ``IN_FLIGHT`` batches per worker are outstanding, so memory stays
bounded however large the file. The pool starts only when a second batch arrives: small data is
encoded in-process, with no process start-up (about half a second) to pay. A job is one batch:
``{column: texts}`` plus the caller's ``meta`` (passed through untouched).

A child process for large files. Tokenizing a big file grows the heap (parser buffers,
per-batch lists) and a process keeps what it once grew: built in the training process, that
memory would stay with it for the whole run. A spawned child does the work and exits, so the
run starts with only what reading the cache costs. Small files are built in-process (a child
costs about a second to start).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attn_cli.data.store import FORMAT, META_FILE, Rows, file_digest
from attn_cli.errors import AttnError, DataError, RunFailure

ENCODE_BATCH = 20_000  # rows tokenized per call (bounded memory while building)
IN_FLIGHT = 2  # batches outstanding per worker
CHILD_MIN_BYTES = 64 << 20  # files from this size on are tokenized in a child process

Encoded = tuple[np.ndarray, np.ndarray, np.ndarray]  # (flat ids, row lengths after the cut, rows cut)


@dataclass
class BuildSpec:
    """What to write: which columns, tokenized how."""

    columns: tuple[str, ...]  # ("src", "tgt") or ("text",)
    encoders: dict  # column -> Tokenizer
    limits: dict  # column -> at most this many ids per row (longer rows are cut)
    seq2seq: bool
    num_proc: int = 1  # processes tokenizing (the worker pool below)
    name: str = "the data"  # what the rows are, for errors
    text_only: bool = False  # pretraining text: rows are (text,), no labels
    length_extra: int = 0  # added to every row's length in lengths.npy (text.text_cost)


def build_entry(rows: Rows, spec: BuildSpec, directory: Path, key: dict, identity: list | None,
                extra: dict, progress: Callable[[int, int | None], None] | None = None) -> dict:
    """Tokenize ``rows`` into a new entry at ``directory`` (written beside it under a temporary
    name, then renamed); returns its meta. A failure (bad data, disk full, Ctrl-C) removes the
    partial entry."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        meta = _write_entry(rows, spec, staged, key, identity, extra, progress)
        _swap_in(staged, directory)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return meta


def _write_entry(rows: Rows, spec: BuildSpec, out: Path, key: dict, identity: list | None, extra: dict,
                 progress) -> dict:
    """Stream ``rows`` through the tokenizer into the entry's files; memory holds a few batches
    (IN_FLIGHT per process) and the per-row lengths."""
    dtypes = {c: ("uint16" if spec.encoders[c].vocab_size <= 65535 else "uint32") for c in spec.columns}
    row_lens, label_parts, done, cut = _write_ids(rows, spec, out, dtypes, progress)
    if done == 0:
        raise DataError(f"{spec.name} has no usable examples (all empty)", "check the fields hold text")
    if progress and rows.total != done:
        progress(done, done)
    lens = {c: np.concatenate(parts) for c, parts in row_lens.items()}  # (N,) int32 each
    row_lens.clear()
    for c in spec.columns:
        _save_offsets(out / f"{c}.idx.npy", lens[c])
    names = extra.get("label_names")
    if spec.seq2seq:
        lengths = np.maximum(lens["src"], lens["tgt"] + 1)
    elif spec.text_only:
        lengths = lens["text"] + spec.length_extra
    else:
        lengths = lens["text"]
        labels = np.concatenate(label_parts)
        if rows.labels is not None:
            names, table = rows.labels()
            labels = labels if table is None else table[labels]
        np.save(out / "labels.npy", labels)
    np.save(out / "lengths.npy", lengths.astype(np.int32))
    if rows.refs is not None:
        (out / "refs.json").write_text(json.dumps(list(rows.refs), ensure_ascii=False), encoding="utf-8")
    files = _sync_files(out)
    meta = {"format": FORMAT, "key": key, "identity": identity, "rows": done, "files": files,
            "truncated": cut, "columns": {c: {"dtype": dtypes[c], "tokens": int(lens[c].sum())}
                                          for c in spec.columns},
            **extra, "label_names": names, **({"text_only": True} if spec.text_only else {})}
    (out / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return meta


def _write_ids(rows: Rows, spec: BuildSpec, out: Path, dtypes: dict, progress
               ) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray], int, int]:
    """Tokenize ``rows`` and append each column's ids to its ``COL.bin``; returns (each column's
    row lengths, per batch; sentiment's class codes, per batch; rows written; rows cut)."""
    row_lens: dict[str, list[np.ndarray]] = {c: [] for c in spec.columns}
    label_parts: list[np.ndarray] = []
    cut = done = 0
    with contextlib.ExitStack() as stack:
        sinks = {c: stack.enter_context(open(out / f"{c}.bin", "wb")) for c in spec.columns}
        jobs = ((pairs, {c: list(texts) for c, texts in zip(spec.columns, zip(*pairs, strict=True), strict=False)})
                for pairs in _rebatch(rows.batches))  # texts by column; sentiment's labels stay in pairs
        processors = {c: spec.encoders[c].sp for c in spec.columns}
        formats = {c: (spec.limits[c], dtypes[c]) for c in spec.columns}
        for pairs, result in encoded(jobs, processors, formats, spec.num_proc):
            cut_here = np.zeros(len(pairs), dtype=bool)
            for c, (flat, lens, was_cut) in result.items():
                sinks[c].write(flat.tobytes())
                row_lens[c].append(lens.astype(np.int32))
                cut_here |= was_cut  # rows cut on any side count once
            if not spec.seq2seq and not spec.text_only:
                label_parts.append(np.asarray([p[1] for p in pairs], dtype=np.int64))
            cut += int(cut_here.sum())
            done += len(pairs)
            if progress:
                progress(done, rows.total)
    return row_lens, label_parts, done, cut


def _save_offsets(path: Path, lens: np.ndarray) -> None:
    """A column's offsets file from its row lengths ((N,) int32): N + 1 offsets, uint32 or,
    past 4G ids, int64."""
    total = int(lens.sum(dtype=np.int64))
    idx = np.empty(len(lens) + 1, dtype=np.uint32 if total < (1 << 32) else np.int64)  # (N + 1,)
    idx[0] = 0
    np.cumsum(lens, out=idx[1:])
    np.save(path, idx)


def _sync_files(out: Path) -> dict:
    """Flush every file of the entry to disk; returns meta.json's ``files``: name -> size, digest."""
    files = {}
    for p in sorted(out.iterdir()):
        with open(p, "rb+") as fh:
            os.fsync(fh.fileno())
        files[p.name] = {"size": p.stat().st_size, "sha1": file_digest(p, sampled=p.name.endswith(".bin"))}
    return files


def _rebatch(batches: Iterable[list[tuple]]) -> Iterator[list[tuple]]:
    """Batches of ENCODE_BATCH rows (the last one shorter), whatever sizes come in."""
    pending: list[tuple] = []
    for batch in batches:
        pending.extend(batch)
        while len(pending) >= ENCODE_BATCH:
            yield pending[:ENCODE_BATCH]
            pending = pending[ENCODE_BATCH:]
    if pending:
        yield pending


def _swap_in(staged: Path, directory: Path) -> None:
    """Rename the finished entry into place, replacing an old one (whose files stay readable to
    any process that still maps them)."""
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old.{os.getpid()}")
        os.replace(directory, old)
    os.replace(staged, directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_writable(root: Path) -> None:
    """A one-line error when the cache directory cannot be created or written."""
    try:
        (root / "tokenized").mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".probe.", dir=root / "tokenized"))
    except OSError as e:
        raise AttnError(f"cannot write the tokenized-data cache in {root}: {e.strerror or e}",
                        "pass --data-cache DIR (or set ATTN_CACHE) to a writable directory") from None


def write_failure(root: Path, e: OSError) -> RunFailure:
    """A failed cache write (disk full, I/O error) as a one-line runtime error."""
    why = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    return RunFailure(f"could not write the tokenized-data cache in {root}: {why} "
                      "(the partial cache was removed)",
                      "free disk space, or pass --data-cache DIR on a disk with room")


# ---------------------------------------------------------------------------------- worker processes


def encode(sp, texts: list[str], limit: int, dtype: str) -> Encoded:
    """(flat ids as ``dtype``, per-row lengths after the cut, which rows were cut) for one
    column of one batch; ``sp`` is a SentencePieceProcessor."""
    ids = sp.encode(texts, num_threads=1)  # parallel across processes, not threads
    full = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))  # (m,)
    lens = np.minimum(full, limit)  # (m,)
    was_cut = full > limit  # (m,)
    rows = (x[:limit] for x in ids) if was_cut.any() else ids
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype, count=int(lens.sum()))  # (sum lens,)
    return flat, lens, was_cut


_SP: dict = {}  # in a worker: column -> SentencePieceProcessor
_FORMAT: dict = {}  # in a worker: column -> (limit, dtype)


def _start_worker(protos: dict, formats: dict) -> None:
    import sentencepiece as spm

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the reading process's to handle

    for column, proto in protos.items():
        _SP[column] = spm.SentencePieceProcessor(model_proto=proto)
    _FORMAT.update(formats)


def _encode_job(texts: dict) -> dict:
    return {c: encode(_SP[c], t, *_FORMAT[c]) for c, t in texts.items()}


def encoded(jobs: Iterable[tuple[object, dict]], processors: dict, formats: dict,
            workers: int) -> Iterator[tuple[object, dict]]:
    """``(meta, {column: Encoded})`` for each ``(meta, {column: texts})`` job, in order.

    ``processors``: column -> SentencePieceProcessor; ``formats``: column -> (limit, dtype);
    ``workers``: processes to encode in (1: this process only)."""
    it = iter(jobs)
    head = list(itertools.islice(it, 2))  # the pool only pays when there are two batches or more
    if len(head) < 2 or workers <= 1:
        for meta, texts in itertools.chain(head, it):
            yield meta, {c: encode(processors[c], t, *formats[c]) for c, t in texts.items()}
        return
    protos = {c: sp.serialized_model_proto() for c, sp in processors.items()}
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_start_worker,
                               initargs=(protos, formats))
    try:
        pending: deque = deque()
        for meta, texts in itertools.chain(head, it):
            pending.append((meta, pool.submit(_encode_job, texts)))
            if len(pending) >= IN_FLIGHT * workers:
                meta_done, fut = pending.popleft()
                yield meta_done, fut.result()
        while pending:
            meta_done, fut = pending.popleft()
            yield meta_done, fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------- child process


def _child(args: tuple, done, results) -> None:
    """The child's work: read, tokenize and write the entry; report errors as plain tuples."""
    from attn_cli.data.spec import Fields  # noqa: F401 (unpickling the request's Fields)
    from attn_cli.data.stream import stream_rows
    from attn_cli.data.tokenizer import Tokenizer

    source, task, fields, text_only, protos, spec_fields, directory, key, identity, root = args
    encoders = {name: Tokenizer(proto) for name, proto in protos.items()}
    spec = BuildSpec(encoders=encoders, **spec_fields)
    try:
        meta = build_entry(stream_rows(source, task, fields, text_only), spec, directory, key, identity,
                           {"label_names": None}, lambda n, _total: setattr(done, "value", n))
        results.put(("ok", meta))
    except AttnError as e:
        results.put(("attn", type(e).__name__, e.message, e.hint))
    except OSError as e:
        failure = write_failure(root, e)
        results.put(("attn", "RunFailure", failure.message, failure.hint))
    except KeyboardInterrupt:
        results.put(("interrupted",))
    except Exception as e:  # a bug: say what and where
        results.put(("bug", f"{type(e).__name__}: {e}"))


def build_in_child(source, task: str, fields, text_only: bool, toks, spec: BuildSpec,
                   directory: Path, key: dict, identity: list, root: Path, total: int | None,
                   progress: Callable[[int, int | None], None] | None) -> dict:
    """:func:`build_entry` on :func:`stream.stream_rows` in a spawned process; returns the
    entry's meta and raises the child's error here (one line, as in-process). The first four
    arguments are stream_rows's (a :class:`store.Rows` recipe)."""
    ctx = mp.get_context("spawn")
    done, results = ctx.Value("q", 0), ctx.Queue()
    protos = {name: tok.proto for name, tok in spec.encoders.items()}
    spec_fields = {"columns": spec.columns, "limits": spec.limits, "seq2seq": spec.seq2seq,
                   "num_proc": spec.num_proc, "name": spec.name, "text_only": spec.text_only,
                   "length_extra": spec.length_extra}
    args = (source, task, fields, text_only, protos, spec_fields, directory, key, identity, root)
    proc = ctx.Process(target=_child, args=(args, done, results), name="attn-tokenize")
    proc.start()
    outcome, shown = None, -1
    try:
        while outcome is None:
            try:
                outcome = results.get(timeout=0.25)
            except queue_mod.Empty:
                if not proc.is_alive():
                    break
            if progress and done.value != shown and (total is None or done.value < total):
                shown = done.value
                progress(shown, total)
        proc.join()
    except BaseException:  # Ctrl-C, or a signal to this process alone: the child stops too and
        if proc.is_alive():  # removes its partial entry (its own KeyboardInterrupt)
            os.kill(proc.pid, signal.SIGINT)
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
        raise
    if outcome is None:
        raise RunFailure(f"the tokenizing process stopped (exit code {proc.exitcode}) before {source.describe()} "
                         "was cached", "run again; if it repeats, pass --debug and report it")
    if outcome[0] == "ok":
        if progress:
            progress(outcome[1]["rows"], outcome[1]["rows"])  # the last call: done == total
        return outcome[1]
    if outcome[0] == "interrupted":
        raise KeyboardInterrupt
    if outcome[0] == "bug":
        raise RuntimeError(outcome[1])
    _, kind, message, hint = outcome
    raise {"DataError": DataError, "RunFailure": RunFailure}.get(kind, AttnError)(message, hint)
