"""Batching across requests: per model, one bounded queue and its worker threads.

Requests ``submit`` their token ids and get a ``concurrent.futures.Future``. A worker takes the
oldest waiting job, adds the next waiting jobs that may share its batch (equal ``key``: the same
decoding options) while their source tokens fit the budget, and waits for more only until the
first job has waited ``max_wait`` seconds; then it hands the batch to ``run`` (which sorts the
texts by length into sub-batches, as the CLI does) and each job its own results, in order.
Under load the worker is busy while requests arrive, so the next batch is taken at once and is
as large as the budget allows; a lone request waits at most ``max_wait``. With ``workers`` > 1
(an engine that decodes batches side by side, one per core), one worker gathers while the
others run their batches: workers take turns gathering, so batches are not split between them.

Nothing here knows about HTTP or models: ``run(jobs) -> one result per job`` does the work.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The model's queue holds ``max_queue`` requests already (HTTP 429)."""


class Closed(Exception):
    """The batcher is shutting down and takes no new work (HTTP 503)."""


@dataclass(eq=False)
class Job:
    """One request's texts, waiting for the worker."""

    ids: list[list[int]]  # token ids per text
    key: Hashable  # jobs share a batch only when their keys are equal
    payload: Any  # what ``run`` needs besides the ids (decoding options, attention flag)
    tokens: int  # source tokens, counted against the batch budget
    enqueued: float  # time.monotonic() at submit
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """What one batch held and how long it took (for metrics)."""

    jobs: int
    texts: int
    tokens: int
    seconds: float


class Batcher:
    """A bounded queue of jobs and the ``workers`` threads that run them in batches."""

    def __init__(self, name: str, run: Callable[[list[Job]], list[Any]], max_tokens: int,
                 max_wait: float, max_queue: int,
                 on_batch: Callable[[BatchStats], None] | None = None,
                 on_depth: Callable[[int], None] | None = None, workers: int = 1) -> None:
        self.name = name
        self._run, self._on_batch, self._on_depth = run, on_batch, on_depth
        self.max_tokens, self.max_wait, self.max_queue = max_tokens, max_wait, max_queue
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._rate = 0.0  # texts per second of recent batches (an exponential moving average)
        self._gathering = threading.Lock()  # held by the one worker gathering a batch
        self._threads = [threading.Thread(target=self._loop, name=f"attn-serve-{name}-{k}", daemon=True)
                         for k in range(max(1, workers))]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    @property
    def depth(self) -> int:
        """Requests waiting (not yet taken into a batch)."""
        return len(self._pending)

    def submit(self, ids: list[list[int]], key: Hashable, payload: Any = None) -> Future:
        """Queue one request's texts; its future gets ``run``'s result for this job."""
        job = Job(ids, key, payload, sum(len(x) for x in ids), time.monotonic())
        with self._cond:
            if self._closed:
                raise Closed(f"model {self.name} is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"model {self.name} has {len(self._pending)} requests waiting")
            self._pending.append(job)
            self._cond.notify()
            depth = len(self._pending)
        if self._on_depth:
            self._on_depth(depth)
        return job.future

    def retry_after(self) -> int:
        """Seconds after which the queue has likely room again (1..60)."""
        waiting = sum(len(j.ids) for j in list(self._pending))
        if self._rate <= 0:
            return 1
        return int(min(60, max(1, math.ceil(waiting / (self._rate * len(self._threads))))))

    def close(self, timeout: float = 5.0) -> None:
        """Take no new jobs, finish the waiting ones (for at most ``timeout`` s), stop the workers;
        jobs still waiting after that fail with ``Closed``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        end = time.monotonic() + timeout
        for t in self._threads:
            if t.is_alive():
                t.join(max(0.0, end - time.monotonic()))
        with self._cond:
            left, self._pending = list(self._pending), deque()
            self._cond.notify_all()
        for job in left:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(Closed(f"model {self.name} shut down"))

    # ------------------------------------------------------------------ the worker

    def _collect(self, batch: list[Job], tokens: int) -> tuple[int, bool]:
        """Move waiting jobs that fit into ``batch`` (under the lock); returns (tokens, full)."""
        kept: deque[Job] = deque()
        full = False
        while self._pending:
            job = self._pending.popleft()
            if job.future.cancelled():
                continue  # its request timed out while waiting
            fits = not batch or (job.key == batch[0].key and tokens + job.tokens <= self.max_tokens)
            if full or not fits:
                full = full or (bool(batch) and job.key == batch[0].key)
                kept.append(job)
                continue
            if not job.future.set_running_or_notify_cancel():
                continue
            batch.append(job)
            tokens += job.tokens
            full = tokens >= self.max_tokens
        self._pending = kept
        return tokens, full

    def _gather(self) -> list[Job] | None:
        """The next batch, or None when closed and nothing is left."""
        batch: list[Job] = []
        tokens = 0
        with self._cond:
            while True:
                tokens, full = self._collect(batch, tokens)
                if not batch:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                left = batch[0].enqueued + self.max_wait - time.monotonic()
                if full or self._closed or left <= 0:
                    break
                self._cond.wait(left)
            depth = len(self._pending)
        if self._on_depth:
            self._on_depth(depth)
        return batch

    def _next(self) -> list[Job] | None:
        with self._gathering:
            return self._gather()

    def _loop(self) -> None:
        while (batch := self._next()) is not None:
            start = time.perf_counter()
            try:
                results = self._run(batch)
                if len(results) != len(batch):
                    raise RuntimeError(f"run gave {len(results)} results for {len(batch)} jobs")
            except Exception as e:  # noqa: BLE001 - every request of the batch learns of it
                for job in batch:
                    job.future.set_exception(e)
                continue
            seconds = time.perf_counter() - start
            texts = sum(len(j.ids) for j in batch)
            if seconds > 0:
                self._rate = texts / seconds if self._rate == 0 else 0.8 * self._rate + 0.2 * texts / seconds
            if self._on_batch:  # before the results: a request answered is already counted
                self._on_batch(BatchStats(len(batch), texts, sum(j.tokens for j in batch), seconds))
            for job, result in zip(batch, results, strict=True):
                job.future.set_result(result)
