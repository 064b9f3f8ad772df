"""The training step reads nothing back from the device in the steady state (issue: feed the
GPU): host reads are counted on the CPU, where every one of them would be a GPU sync on CUDA."""

import threading

import pytest
import torch

from attn_cli.config import TrainConfig
from attn_cli.data.batching import collate_classify, collate_seq2seq, padded_width
from attn_cli.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from attn_cli.train.setup import RunRequest, train_run
from attn_cli.train.stepping import READ_EVERY, StepTotals, rewind
from tests.conftest import DATA_DIR, Quiet
from tests.train.test_train import BASE, FIELDS, IT_EN

READS = ("item", "tolist", "__bool__", "__float__", "__int__")


class ReadCounter:
    """Counts host reads of tensors (``.item()``, ``.tolist()``, ``bool()``, ``float()``,
    ``int()``) made by the main thread (the prefetch thread collates on the host: not counted)
    while ``on``."""

    def __init__(self, monkeypatch):
        self.n, self.on = 0, False
        main = threading.main_thread()
        for name in READS:
            real = getattr(torch.Tensor, name)

            def spy(t, *a, _real=real, **kw):
                if self.on and threading.current_thread() is main:
                    self.n += 1
                return _real(t, *a, **kw)

            monkeypatch.setattr(torch.Tensor, name, spy)


def _count_loop_reads(monkeypatch, tmp_path, **kw) -> tuple[int, int]:
    """(host reads inside the training loop, steps) of a tiny translate run; evaluation and
    saving are not counted (they read what they write)."""
    from attn_cli.train import trainer as T

    counter = ReadCounter(monkeypatch)
    real_epoch, real_eval, real_save = T.Trainer._run_epoch, T.Trainer._evaluate_and_save, T.Trainer.save_last

    def epoch(self, *a):
        counter.on = True
        try:
            return real_epoch(self, *a)
        finally:
            counter.on = False

    def paused(real):
        def call(self, *a):
            was, counter.on = counter.on, False
            try:
                return real(self, *a)
            finally:
                counter.on = was
        return call

    monkeypatch.setattr(T.Trainer, "_run_epoch", epoch)
    monkeypatch.setattr(T.Trainer, "_evaluate_and_save", paused(real_eval))
    monkeypatch.setattr(T.Trainer, "save_last", paused(real_save))
    cfg = TrainConfig(**{**BASE, **kw})
    res = train_run(RunRequest(data=IT_EN, out=tmp_path / "run", fields=FIELDS), cfg, Quiet())
    return counter.n, res.state["step"]


def test_a_100_step_run_reads_the_device_at_most_once_every_4_steps(monkeypatch, tmp_path):
    reads, steps = _count_loop_reads(monkeypatch, tmp_path, max_steps=100, log_every=50, eval_every=10**6,
                                     schedule="inverse_sqrt")
    assert steps == 100
    assert reads <= 0.25 * steps, reads  # one read of the step totals every READ_EVERY steps
    assert reads >= steps // READ_EVERY  # (the counter does see them)


def test_ema_and_no_clipping_add_no_reads(monkeypatch, tmp_path):
    reads, steps = _count_loop_reads(monkeypatch, tmp_path, max_steps=40, log_every=50, eval_every=10**6,
                                     ema=0.99, clip=0.0, schedule="inverse_sqrt")
    assert steps == 40 and reads <= steps // READ_EVERY + 1, reads


def test_step_totals_sum_on_the_device_and_reset_when_read():
    from attn_cli.train.distributed import Dist

    totals = StepTotals(torch.device("cpu"))
    totals.add(torch.tensor(2.0), torch.tensor(False), 100)
    totals.add(torch.tensor(float("nan")), torch.tensor(True), 50)  # skipped: neither loss nor tokens
    totals.add(torch.tensor(1.0), torch.tensor(False), 30)
    assert totals.read(Dist()) == (3.0, 1, 130, 3)
    assert totals.steps == 0 and totals.read(Dist()) == (0.0, 0, 0, 0)


def test_rewind_gives_back_the_learning_rate_of_the_skipped_steps():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    for _ in range(5):
        opt.step()
        sched.step()
    rewind(sched, 2)
    assert sched.last_epoch == 3 and opt.param_groups[0]["lr"] == pytest.approx(0.25)
    assert sched.get_last_lr() == [pytest.approx(0.25)]


def test_widths_round_up_to_the_multiple_within_the_positions():
    assert [padded_width(n, 8) for n in (1, 7, 8, 9, 17)] == [8, 8, 8, 16, 24]
    assert padded_width(250, 8, limit=256) == 256 and padded_width(253, 8, limit=256) == 256
    assert padded_width(251, 8, limit=252) == 252  # never past the model's positions ...
    assert padded_width(300, 8, limit=256) == 300  # ... nor rounded past a row already longer
    b = collate_seq2seq([([5, 6, 7], [8, 9]), ([5], [8])], PAD_ID, BOS_ID, EOS_ID, multiple=8)
    assert b.src.shape == (2, 8) and b.tgt_in.shape == (2, 8) and b.tgt_out.shape == (2, 8)
    assert b.n_tokens == 5 and b.n_slots == 32 and b.src_padded
    assert b.tgt_out[0].tolist() == [8, 9, EOS_ID] + [PAD_ID] * 5
    exact = collate_seq2seq([([5, 6], [8]), ([5, 7], [9])], PAD_ID, BOS_ID, EOS_ID)
    assert exact.src.shape == (2, 2) and not exact.src_padded  # the host knows: no mask needed
    c = collate_classify([([5, 6, 7, 8, 9, 10, 11, 12], 1)], PAD_ID, multiple=8)
    assert c.src.shape == (1, 8) and not c.src_padded


def test_the_collate_hint_replaces_the_mask_check(monkeypatch):
    """A training batch tells attention whether it holds padding: no device read for the mask."""
    from attn_cli.config import model_config_from_preset
    from attn_cli.model.transformer import build_model

    model = build_model(model_config_from_preset("tiny", "translate", 100)).eval()
    counter = ReadCounter(monkeypatch)
    b = collate_seq2seq([([5, 6, 7], [8, 9]), ([5], [8])], PAD_ID, BOS_ID, EOS_ID)
    with torch.no_grad():
        counter.on = True
        hinted = model(b.src, b.tgt_in, target=b.tgt_out, padded=b.src_padded)
        assert counter.n == 0
        checked = model(b.src, b.tgt_in, target=b.tgt_out)  # no hint: the mask is looked at
        assert counter.n > 0
    torch.testing.assert_close(hinted, checked)


def test_compiled_training_recompiles_a_bounded_number_of_times(tmp_path):
    """--compile on varied token-budget batches: widths padded to multiples of 8 and dynamic
    shapes keep the graphs few (the loss runs outside them)."""
    import torch._dynamo.utils as du

    du.counters.clear()
    cfg = TrainConfig(**{**BASE, "task": "sentiment", "eval_samples": 2, "max_steps": 30, "compile": True,
                         "eval_every": 10**6, "log_every": 10, "device": "cpu", "max_tokens": 300})
    res = train_run(RunRequest(data=f"{DATA_DIR}/sentiment.jsonl", out=tmp_path / "c"), cfg, Quiet())
    assert res.state["step"] == 30
    frames = sum(du.counters["stats"].values()) and du.counters["stats"]["unique_graphs"]
    assert 0 < frames <= 8, dict(du.counters["stats"])


def test_the_default_token_budget_follows_the_device_and_the_processes(monkeypatch):
    from types import SimpleNamespace

    from attn_cli.device import default_max_tokens

    cpu = torch.device("cpu")
    assert default_max_tokens(cpu) == 4096 and default_max_tokens(cpu, 4) == 4096  # split among them
    cuda = torch.device("cuda", 0)
    for gib, want in ((80, 65536), (141, 65536), (40, 32768), (24, 16384), (16, 16384), (8, 8192), (2, 4096)):
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda d, gib=gib: SimpleNamespace(total_memory=gib * 2**30))
        assert default_max_tokens(cuda) == want, gib
    assert default_max_tokens(cuda, 4) == 4 * 4096  # per GPU: 4 processes take 4 times the tokens


def test_an_unset_token_budget_is_resolved_and_kept_for_a_resume(tmp_path):
    import json

    cfg = TrainConfig(**{**BASE, "max_tokens": None, "max_steps": 2})
    train_run(RunRequest(data=IT_EN, out=tmp_path / "r", fields=FIELDS), cfg, Quiet())
    assert json.loads((tmp_path / "r/train_config.json").read_text())["max_tokens"] == 4096
