"""The task units on tiny hand-made batches, without a training run: what each collates and
counts, the masked LM's masks (a function of torch's seed, as the Trainer sets it per step), the
denoiser's noise (a function of --seed, rank and draw), fixed validation noise, and the pick."""

import inspect

import pytest
import torch
import torch.nn.functional as F

from attn_cli.config import TrainConfig, model_config_from_preset
from attn_cli.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from attn_cli.model.transformer import build_model
from attn_cli.train.pretrain import IGNORE, DenoisingUnit, MaskedLMUnit, pretrain_unit
from attn_cli.train.setup import task_unit
from attn_cli.train.trainer import Trainer
from attn_cli.train.units import ClassifyUnit, Seq2SeqUnit, TaskContext, TaskUnit, finetune_unit

V = 40  # vocabulary size of the hand-made rows
CPU = torch.device("cpu")
PAIRS = [([5, 6, 7], [8, 9]), ([10, 11], [12, 13, 14, 15])]  # (source ids, target ids)
LABELLED = [([5, 6, 7], 1), ([8, 9], 0), ([10], 1)]  # (text ids, label)
TEXTS = [list(range(4, 4 + n)) for n in (12, 7, 20, 3)] + [[]]  # id lists; one empty text


def context(task, objective=None, seed=1, rank=0, labels=2):
    cfg = TrainConfig(task=task, preset="tiny", objective=objective, seed=seed, max_tokens=400)
    mcfg = model_config_from_preset("tiny", task, V, None, 0 if objective else labels if task == "sentiment" else 0)
    return TaskContext(cfg, mcfg, None, CPU, rank)  # (no tokenizer: these objectives do not read it)


def test_every_unit_has_the_protocol_and_the_trainer_is_not_subclassed():
    members = [m for m in dir(TaskUnit) if not m.startswith("_")]
    assert set(members) == {"collate", "prepare", "seen", "loss_sum", "validate"}
    for unit in (Seq2SeqUnit(context("translate")), ClassifyUnit(context("sentiment")),
                 MaskedLMUnit(context("sentiment", "mlm")), DenoisingUnit(context("translate", "denoise"))):
        for name in members:
            want = inspect.signature(getattr(TaskUnit, name)).parameters
            assert list(inspect.signature(getattr(unit, name)).parameters) == list(want)[1:], name
        assert isinstance(unit.primary, str)
    assert Trainer.__subclasses__() == []


@pytest.mark.parametrize("task, objective, cls, primary", [
    ("translate", None, Seq2SeqUnit, "bleu"), ("summarize", None, Seq2SeqUnit, "rouge1"),
    ("sentiment", None, ClassifyUnit, "accuracy"),
    ("sentiment", "mlm", MaskedLMUnit, "masked_accuracy"),
    ("translate", "denoise", DenoisingUnit, "token_accuracy"),
    ("summarize", "denoise", DenoisingUnit, "token_accuracy"),
])
def test_the_run_picks_its_unit(task, objective, cls, primary):
    ctx = context(task, objective)
    unit = task_unit(ctx)
    assert type(unit) is cls and unit.primary == primary
    assert type(pretrain_unit(ctx) if objective else finetune_unit(ctx)) is cls


def test_seq2seq_unit_collates_pairs_and_counts_target_tokens():
    unit = Seq2SeqUnit(context("translate"))
    batch = unit.collate(PAIRS, draw=7)
    assert batch.tgt_in[:, 0].tolist() == [BOS_ID, BOS_ID]
    assert batch.tgt_out.tolist() == [[8, 9, EOS_ID, PAD_ID, PAD_ID], [12, 13, 14, 15, EOS_ID]]
    assert unit.seen(batch) == 2 + 1 + 4 + 1  # targets and their EOS
    prepared, count = unit.prepare(batch)
    assert prepared is batch and count == 8.0
    again = unit.collate(PAIRS, draw=8)  # nothing random: the draw does not matter
    assert torch.equal(again.src, batch.src) and torch.equal(again.tgt_out, batch.tgt_out)


def test_classify_unit_counts_examples_and_sums_cross_entropy():
    unit = ClassifyUnit(context("sentiment"))
    batch = unit.collate(LABELLED, draw=0)
    assert batch.labels.tolist() == [1, 0, 1] and batch.src.tolist()[1] == [8, 9, PAD_ID]
    assert unit.seen(batch) == 3 and unit.prepare(batch) == (batch, 3.0)
    logits = torch.tensor([[0.1, 2.0], [1.0, -1.0], [0.3, 0.2]])
    model = lambda src, padded=None: logits  # noqa: E731 - a classifier's (B, C) logits
    want = F.cross_entropy(logits, batch.labels, label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(unit.loss_sum(model, batch, 0.1), want)


def test_masked_lm_unit_masks_are_a_function_of_the_step_seed():
    unit = MaskedLMUnit(context("sentiment", "mlm"))
    batch = unit.collate(TEXTS, draw=3)
    assert batch.src[4].tolist()[0] == EOS_ID  # an empty text reads as EOS
    assert unit.seen(batch) == 12 + 7 + 20 + 3 + 1  # pieces read, not pieces masked

    def masked(seed):
        torch.manual_seed(seed)  # what the Trainer does before each step (step_seed)
        return unit.prepare(batch)

    (a, count), (b, _), (c, _) = masked(11), masked(11), masked(12)
    assert torch.equal(a.src, b.src) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, c.labels)
    at = a.labels.ne(IGNORE)
    assert count == float(at.sum()) > 0
    assert torch.equal(a.labels[at], batch.src[at])  # the originals where hidden
    assert not at[batch.src.eq(PAD_ID)].any()  # padding never predicted
    assert torch.equal(a.src[~at], batch.src[~at])  # the rest is left alone


def test_denoising_unit_noise_is_a_function_of_seed_rank_and_draw():
    unit = DenoisingUnit(context("translate", "denoise"))
    rows = TEXTS[:4]
    a, b = unit.collate(rows, draw=5), unit.collate(rows, draw=5)
    assert torch.equal(a.src, b.src) and torch.equal(a.tgt_out, b.tgt_out)
    assert not torch.equal(unit.collate(rows, draw=6).src, a.src)
    assert not torch.equal(DenoisingUnit(context("translate", "denoise", rank=1)).collate(rows, 5).src, a.src)
    assert not torch.equal(DenoisingUnit(context("translate", "denoise", seed=2)).collate(rows, 5).src, a.src)
    # the target is the original text: the unit counts its tokens
    assert a.tgt_out[0].tolist()[:13] == rows[0] + [EOS_ID]
    assert unit.seen(a) == a.n_tokens == sum(len(r) + 1 for r in rows)
    assert unit.prepare(a) == (a, float(a.n_tokens))


def test_pretraining_validation_draws_the_same_noise_every_time():
    torch.manual_seed(0)
    ctx = context("sentiment", "mlm")
    model = build_model(ctx.model_cfg).eval()
    unit = MaskedLMUnit(ctx)
    with torch.inference_mode():
        first = unit.validate(model, TEXTS, [])
        torch.manual_seed(99)  # the global generator plays no part
        assert unit.validate(model, TEXTS, []) == first
    assert set(first) == {"valid_loss", "valid_ppl", "masked_accuracy"} and 0 <= first["masked_accuracy"] <= 100
    assert torch.equal(unit.valid_batch(TEXTS, 0).labels, unit.valid_batch(TEXTS, 0).labels)
    assert not torch.equal(unit.valid_batch(TEXTS, 0).labels, unit.valid_batch(TEXTS, 1).labels)
    denoise = DenoisingUnit(context("translate", "denoise"))
    assert torch.equal(denoise.valid_batch(TEXTS[:4], 2).src, denoise.valid_batch(TEXTS[:4], 2).src)
