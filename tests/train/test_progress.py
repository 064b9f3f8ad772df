"""The loop's bookkeeping without a run: the statistics window and the stop conditions."""

import pytest

from attn_cli.config import TrainConfig
from attn_cli.train.progress import Window, stop_reason
from attn_cli.train.state import TrainState

BASE = dict(task="translate", preset="tiny")


def test_window_rates_and_reset_in_place():
    w = Window(t=10.0)
    w.tokens, w.loss, w.n, w.real, w.slots, w.wait = 400, 6.0, 2, 30, 40, 1.0
    st = TrainState(step=7, best=12.5, train_seconds=3.0)
    stats = w.stats(st, lr=1e-3, epoch=0.5, now=14.0)
    assert stats == {"step": 7, "epoch": 0.5, "lr": 1e-3, "loss": 3.0, "tokens_per_s": 100.0,
                     "pad_fraction": 0.25, "data_wait": 0.25, "best": 12.5, "elapsed": 3.0}
    same = w
    w.reset(20.0)
    assert same is w and w == Window(t=20.0)
    assert w.stats(st, 1e-3, 1.0, 20.0)["loss"] == 0.0  # an empty window divides by one


@pytest.mark.parametrize("options, state, epoch, reason", [
    ({"max_steps": 5}, TrainState(step=5), 0, "reached --max-steps 5"),
    ({"max_steps": 5}, TrainState(step=4), 0, None),
    ({"epochs": 2}, TrainState(), 2, "finished 2 epoch(s)"),
    ({"epochs": 2}, TrainState(), 1, None),
    ({"patience": 2, "max_steps": 100}, TrainState(bad_evals=2), 0,
     "no improvement in 2 evaluations (--patience)"),
])
def test_stop_reasons(options, state, epoch, reason):
    assert stop_reason(TrainConfig(**{**BASE, **options}), state, epoch) == reason


def test_time_budget_counts_the_runs_training_time_and_ends_at_the_schedules_horizon():
    cfg = TrainConfig(**{**BASE, "time_budget": 60.0})
    assert stop_reason(cfg, TrainState(train_seconds=59.0), 0) is None
    assert stop_reason(cfg, TrainState(train_seconds=61.0), 0) == "time budget of 60 s used"  # all sessions
    assert stop_reason(cfg, TrainState(step=99, horizon=100), 0) is None
    assert stop_reason(cfg, TrainState(step=100, horizon=100), 0) == "time budget of 60 s used"
