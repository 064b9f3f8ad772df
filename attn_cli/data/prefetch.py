"""Batches prepared ahead of the training step, in a background thread.

Gathering a batch's rows from the cache files and padding them runs while the model
trains on the previous batch; ``data_wait`` in metrics.jsonl says how long the step still waited.
"""

from __future__ import annotations

import queue
import threading
import time

PREFETCH_DEPTH = 4  # batches collated ahead of the training step


def mark_last(items):
    """``(item, is_last)`` for each item of an iterator (one item of lookahead)."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    for nxt in it:
        yield current, False
        current = nxt
    yield current, True


class Prefetch:
    """Run a generator in a background thread, ``depth`` items ahead: batches are gathered
    from the cache files and padded while the model trains on the previous one. Iterating
    re-raises the generator's exception; :meth:`close` stops the thread."""

    _END = object()

    def __init__(self, items, depth: int):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()
        self.waited = 0.0  # seconds the consumer spent waiting for a batch
        self.thread = threading.Thread(target=self._fill, args=(items,), daemon=True,
                                       name="attn-prefetch")
        self.thread.start()

    def _fill(self, items) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the consumer
            self._put(e)

    def _put(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            t0 = time.perf_counter()
            item = self.queue.get()
            self.waited += time.perf_counter() - t0
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
