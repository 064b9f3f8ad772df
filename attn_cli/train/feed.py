"""This process's training batches: an epoch's token-budget plan over the training data (the
cache's TokenStore, an in-memory list, or --stream's shuffle buffer), from a resume position,
this rank's share of each global batch, collated by the task unit. The Trainer prefetches them
in a thread (``attn_cli.data.prefetch``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from attn_cli.config import TrainConfig
from attn_cli.data.batching import Batch, DataPosition, plan_batches, split_batch_indices
from attn_cli.data.store import InMemoryExamples
from attn_cli.data.stream import StreamSource
from attn_cli.train import distributed as dd
from attn_cli.train.units import TaskUnit


class BatchFeed:
    """Collated training batches of one process, epoch by epoch."""

    def __init__(self, train, seq2seq: bool, cfg: TrainConfig, unit: TaskUnit, dist: dd.Dist,
                 device: torch.device) -> None:
        """``train``: a TokenStore, a StreamSource (--stream) or a list of examples."""
        if isinstance(train, list):
            train = InMemoryExamples(train, seq2seq)
        self.stream = train if isinstance(train, StreamSource) else None  # --stream
        self.train_ex = train
        self.lengths = None if self.stream else train.lengths  # (N,) int32: all that planning reads
        self.cfg, self.unit, self.dist, self.device = cfg, unit, dist, device

    def local_batch(self, indices, examples: list[tuple] | None = None, draw: int = 0) -> tuple[Batch, float]:
        """This process's part of a global batch (example ``indices`` into the training data,
        or the ``examples`` themselves), collated by the unit, and its weight. A rank whose part
        is empty runs one example with weight 0, so every rank still joins DDP's gradient
        all-reduce. ``draw`` numbers the batch in the run (for noise drawn while collating)."""
        weight = 1.0
        if self.dist.enabled:
            part = split_batch_indices(indices, self.dist.rank, self.dist.world_size)
            indices, weight = (part, 1.0) if part else (indices[:1], 0.0)
        rows = [examples[i] for i in indices] if examples is not None else self.train_ex.gather(indices)
        return self.unit.collate(rows, draw), weight

    def epoch(self, start: DataPosition) -> Iterator[tuple[DataPosition, float, tuple[Batch, float]]]:
        """(data position after it, fraction of the epoch done, (this process's collated batch,
        weight)) for the rest of ``start``'s epoch; pinned for an asynchronous copy on CUDA."""
        epoch = start.epoch
        if self.stream is not None:  # the epoch's length is unknown: its fraction reads 0
            items = ((DataPosition(epoch, position, consumed), 0.0, examples)
                     for consumed, position, examples in
                     self.stream.batches(epoch, start.consumed, start.position))
        else:
            plan = plan_batches(self.lengths, self.cfg.max_tokens, seed=self.cfg.seed, epoch=epoch)
            items = ((DataPosition(epoch, k + 1), (k + 1) / len(plan), plan[k])
                     for k in range(start.position, len(plan)))
        for after, fraction, rows in items:
            draw = (after.epoch << 32) + after.position
            if self.stream is not None:
                batch, weight = self.local_batch(range(len(rows)), rows, draw)
            else:
                batch, weight = self.local_batch(rows, draw=draw)
            if self.device.type == "cuda":
                batch = batch.pin_memory()
            yield after, fraction, (batch, weight)
