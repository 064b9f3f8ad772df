"""Tokenizing a cache entry's batches, in worker processes when there are many.

Building a cache is about half SentencePiece encoding and half Python work around it (turning
id lists into flat arrays). Both hold the GIL, so threads do not help; processes do. The process
that reads the file hands each batch's texts to a pool of ``workers`` spawned processes and
takes the flat ids back in order, so reading, encoding and writing overlap. At most
``IN_FLIGHT`` batches per worker are outstanding, so memory stays bounded however large the file.
The pool starts only when a second batch arrives: small data is encoded in-process, with no
process start-up (about half a second) to pay.

A job is one batch: ``{column: texts}`` plus the caller's ``meta`` (passed through untouched).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np

IN_FLIGHT = 2  # batches outstanding per worker

Encoded = tuple[np.ndarray, np.ndarray, np.ndarray]  # (flat ids, row lengths after the cut, rows cut)


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
    import signal

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
