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
from attn_cli.data.joining import Joins, join_rows, plan_joins
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
        self.sides = None  # (source, target) lengths, (N,) each, when --concat joins examples
        if self.stream is None and seq2seq and cfg.concat > 0 and not train.text_only:
            self.sides = train.side_lengths()

    def joins(self, epoch: int) -> Joins | None:
        """Epoch ``epoch``'s joined items (--concat), or None when examples train alone."""
        if self.sides is None:
            return None
        return plan_joins(*self.sides, self.cfg.concat, self.cfg.max_len, seed=self.cfg.seed, epoch=epoch)

    def local_batch(self, indices, examples: list[tuple] | None = None, draw: int = 0,
                    joins: Joins | None = None) -> tuple[Batch, float]:
        """This process's part of a global batch (example ``indices`` into the training data,
        items of ``joins`` when given, or the ``examples`` themselves), collated by the unit, and
        its weight. A rank whose part is empty runs one example with weight 0, so every rank
        still joins DDP's gradient all-reduce. ``draw`` numbers the batch in the run (for noise
        drawn while collating)."""
        weight = 1.0
        if self.dist.enabled:
            part = split_batch_indices(indices, self.dist.rank, self.dist.world_size)
            indices, weight = (part, 1.0) if part else (indices[:1], 0.0)
        if examples is not None:
            rows = [examples[i] for i in indices]
        elif joins is not None:
            flat, spans = joins.expand(indices)
            rows = join_rows(self.train_ex.gather(flat), spans)
        else:
            rows = self.train_ex.gather(indices)
        return self.unit.collate(rows, draw), weight

    def epoch(self, start: DataPosition) -> Iterator[tuple[DataPosition, float, tuple[Batch, float]]]:
        """(data position after it, fraction of the epoch done, (this process's collated batch,
        weight)) for the rest of ``start``'s epoch; pinned for an asynchronous copy on CUDA."""
        epoch, joins = start.epoch, None
        if self.stream is not None:  # the epoch's length is unknown: its fraction reads 0
            items = ((DataPosition(epoch, position, consumed), 0.0, examples)
                     for consumed, position, examples in
                     self.stream.batches(epoch, start.consumed, start.position))
        else:
            joins = self.joins(epoch)
            lengths = self.lengths if joins is None else joins.lengths  # (N,) examples or (n_items,) items
            plan = plan_batches(lengths, self.cfg.max_tokens, seed=self.cfg.seed, epoch=epoch)
            items = ((DataPosition(epoch, k + 1), (k + 1) / len(plan), plan[k])
                     for k in range(start.position, len(plan)))
        for after, fraction, rows in items:
            draw = (after.epoch << 32) + after.position
            if self.stream is not None:
                batch, weight = self.local_batch(range(len(rows)), rows, draw)
            else:
                batch, weight = self.local_batch(rows, draw=draw, joins=joins)
            if self.device.type == "cuda":
                batch = batch.pin_memory()
            yield after, fraction, (batch, weight)
