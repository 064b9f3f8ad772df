"""--preset auto's sizing rule on synthetic (data, budget, speed) inputs, and the schedule and
evaluation spacing that end with the budget."""

import math

import pytest

from attn_cli.config import TrainConfig
from attn_cli.errors import AttnError
from attn_cli.train import sizing
from attn_cli.train.optim import lr_factor
from attn_cli.train.progress import Session, eval_due
from attn_cli.train.state import TrainState

SPEED = sizing.Speed(overhead_s=0.02, s_per_flop=1 / 20e9)  # a 20 GFLOP/s machine with 20 ms a step


def size(tokens, task="sentiment", length=200.0, vocab=8000):
    return sizing.DataSize(task=task, epoch_tokens=tokens, length=length, vocab=vocab)


def rung(choice):
    return sizing.LADDER.index(choice.option.shape)


def test_parameters_count_embeddings_and_layers():
    s = sizing.Shape(64, 4, 2, 256)
    # encoder-only: 8000 x 64 embedding + 2 x (4 x 64^2 + 2 x 64 x 256)
    assert sizing.parameters(s, size(10**6)) == 8000 * 64 + 2 * (4 * 64 * 64 + 2 * 64 * 256)
    seq = sizing.parameters(s, size(10**6, task="translate"))
    assert seq == sizing.parameters(s, size(10**6)) + 2 * (8 * 64 * 64 + 2 * 64 * 256)


def test_more_time_buys_a_larger_model_when_data_is_plentiful():
    data = size(10**10)  # never repeated: compute-optimal sizing alone
    picks = [rung(sizing.choose(data, sizing.Budget(4096, seconds=s), SPEED)) for s in (300, 3000, 30000)]
    assert picks[0] < picks[1] < picks[2]


def test_compute_optimal_choice_has_twenty_tokens_per_parameter_and_the_next_rung_not():
    data = size(10**10)
    choice = sizing.choose(data, sizing.Budget(4096, seconds=3000), SPEED)
    opts = sizing.options(data, sizing.Budget(4096, seconds=3000), SPEED)
    i = rung(choice)
    assert opts[i].tokens >= sizing.TOKENS_PER_PARAM * opts[i].params
    assert opts[i + 1].tokens < sizing.TOKENS_PER_PARAM * opts[i + 1].params
    assert "compute-optimal" in choice.why


def test_limited_data_grows_the_model_until_it_sees_the_data_four_times():
    budget = sizing.Budget(4096, seconds=3000)
    plenty = sizing.choose(size(10**10), budget, SPEED)
    small = sizing.choose(size(2_000_000), budget, SPEED)  # the compute-optimal model would repeat it often
    assert rung(small) > rung(plenty)
    assert small.option.epochs >= sizing.EPOCH_CAP
    nxt = sizing.options(size(2_000_000), budget, SPEED)[rung(small) + 1]
    assert nxt.epochs < sizing.EPOCH_CAP or nxt.params > sizing.MAX_PARAMS_PER_TOKEN * 2_000_000
    assert "the data is the limit" in small.why


def test_ten_examples_get_the_smallest_model_with_a_note():
    choice = sizing.choose(size(150, length=15), sizing.Budget(4096, seconds=600), SPEED)
    assert choice.option.shape == sizing.LADDER[0]
    assert "very small" in choice.why


def test_the_epochs_plan_sets_the_tokens_of_a_step():
    data = sizing.DataSize(task="sentiment", epoch_tokens=1_000_000, length=20, vocab=8000, epoch_steps=250)
    opt = sizing.options(data, sizing.Budget(4096, steps=1000), None)[0]
    assert opt.epochs == pytest.approx(4.0) and opt.tokens == pytest.approx(4_000_000)


def test_max_steps_sizes_without_a_speed():
    few = sizing.choose(size(10**10), sizing.Budget(4096, steps=100))
    many = sizing.choose(size(10**10), sizing.Budget(4096, steps=100_000))
    assert rung(few) == 0 and rung(many) > 3
    assert many.option.steps == 100_000


def test_a_budget_too_short_for_the_smallest_model_names_the_minimum():
    slow = sizing.Speed(overhead_s=1.0, s_per_flop=0.0)  # one second a step
    with pytest.raises(AttnError) as e:
        sizing.choose(size(10**8), sizing.Budget(4096, seconds=10), slow)
    need = sizing.minimum_seconds(size(10**8), sizing.Budget(4096, seconds=10), slow)
    assert f"about {math.ceil(need)} s" in e.value.message and "too short" in e.value.message
    assert f"--time-budget {math.ceil(need)}s" in e.value.hint
    assert need == pytest.approx(sizing.MIN_STEPS * sizing.LOOP_OVERHEAD / (1 - sizing.EVAL_SHARE))


def test_the_choice_line_says_what_and_why():
    choice = sizing.choose(size(10**8), sizing.Budget(4096, seconds=600), SPEED)
    line = choice.line("sentiment")
    assert line.startswith(f"auto: d={choice.option.shape.d_model}, ") and "parameters" in line and "epochs" in line
    assert choice.to_dict()["parameters"] == choice.option.params


# ---------------------------------------------------------------- the schedule and evaluations


def test_linear_schedule_reaches_zero_at_max_steps():
    cfg = TrainConfig(task="sentiment", max_steps=1000, warmup=100)
    assert cfg.decay == "linear"
    assert lr_factor(99, cfg) == pytest.approx(1.0)
    assert lr_factor(550, cfg) == pytest.approx(0.5, abs=0.01)
    assert lr_factor(1000, cfg) == 0.0


def test_time_budget_schedule_ends_at_the_estimated_horizon_and_no_budget_keeps_inverse_sqrt():
    cfg = TrainConfig(task="sentiment", time_budget=60.0, warmup=10)
    assert lr_factor(500, cfg, horizon=1000) == pytest.approx(1 - 490 / 990)
    assert lr_factor(1000, cfg, horizon=1000) == 0.0
    free = TrainConfig(task="sentiment", warmup=10)
    assert free.decay == "inverse_sqrt" and lr_factor(40, free) == pytest.approx(math.sqrt(10 / 41))


def test_cosine_and_linear_need_a_budget():
    with pytest.raises(ValueError, match="needs max_steps or time_budget"):
        TrainConfig(task="sentiment", schedule="linear")


def session(step=0, seconds=0.0):
    return Session(started=0.0, seconds_before=0.0, last_eval_step=step, last_eval_seconds=seconds)


def test_evaluations_are_spaced_by_a_tenth_of_the_budget():
    cfg = TrainConfig(task="sentiment", time_budget=600.0)
    assert not eval_due(cfg, TrainState(step=400, train_seconds=59.0), session())
    assert eval_due(cfg, TrainState(step=400, train_seconds=60.5), session())
    assert not eval_due(cfg, TrainState(step=40, train_seconds=100.0), session())  # < MIN_EVAL_STEPS apart
    steps = TrainConfig(task="sentiment", max_steps=5000)
    assert not eval_due(steps, TrainState(step=499), session()) and eval_due(steps, TrainState(step=500), session())
    given = TrainConfig(task="sentiment", max_steps=5000, eval_every=7)
    assert eval_due(given, TrainState(step=7), session())


def test_a_gpu_without_a_budget_evaluates_by_time_and_never_more_than_it_trains():
    from attn_cli.train.progress import EVAL_SECONDS, clock_spaced

    cfg = TrainConfig(task="sentiment")  # no budget, no --eval-every
    many = TrainState(step=5000, train_seconds=EVAL_SECONDS - 1)
    assert eval_due(cfg, many, session()) and not eval_due(cfg, many, session(), by_time=True)  # CPU: steps
    assert eval_due(cfg, TrainState(step=5000, train_seconds=EVAL_SECONDS), session(), by_time=True)
    assert clock_spaced(cfg, True) and not clock_spaced(cfg, False)
    assert not clock_spaced(TrainConfig(task="sentiment", eval_every=100), True)
    # the last evaluations took 400 s each: the next waits for 400 s of training, not 300
    slow = Session(started=0.0, seconds_before=0.0, last_eval_step=0, last_eval_seconds=0.0, eval_seconds=800.0,
                   evals=2)
    assert not eval_due(cfg, TrainState(step=5000, train_seconds=399.0), slow, by_time=True)
    assert eval_due(cfg, TrainState(step=5000, train_seconds=401.0), slow, by_time=True)
    budget = TrainConfig(task="sentiment", time_budget=600.0)  # a tenth of the budget is 60 s ...
    assert not eval_due(budget, TrainState(step=400, train_seconds=70.0), slow)  # ... but evaluating takes 400
