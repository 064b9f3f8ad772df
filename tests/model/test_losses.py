"""The chunked linear cross-entropy equals F.cross_entropy on full logits, value and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attn_cli.config import ModelConfig
from attn_cli.model.losses import linear_cross_entropy
from attn_cli.model.transformer import MaskedLM, Seq2Seq


def _reference(h, w, t, ignore, smoothing):
    return F.cross_entropy(h @ w.t(), t, ignore_index=ignore, label_smoothing=smoothing, reduction="sum")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])  # one row, uneven chunks, one chunk, more than N
def test_value_and_gradients_equal_the_unfused_loss(smoothing, chunk):
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(53, 12, generator=gen, requires_grad=True)  # (N, D)
    w = torch.randn(40, 12, generator=gen, requires_grad=True)  # (V, D)
    t = torch.randint(1, 40, (53,), generator=gen)
    t[::4] = 0  # ignored rows (padding)
    ref = _reference(h, w, t, 0, smoothing)
    gh, gw = torch.autograd.grad(ref * 2.5, (h, w))  # an upstream gradient other than 1
    out = linear_cross_entropy(h, w, t, ignore_index=0, smoothing=smoothing, chunk=chunk)
    gh2, gw2 = torch.autograd.grad(out * 2.5, (h, w))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gh2, gh, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw2, gw, rtol=1e-4, atol=1e-5)
    assert gh2[::4].abs().sum() == 0  # ignored rows get no gradient
    with torch.no_grad():  # evaluation path: the loss only
        torch.testing.assert_close(linear_cross_entropy(h, w, t, ignore_index=0, smoothing=smoothing,
                                                        chunk=chunk), ref, rtol=1e-5, atol=1e-4)


def test_models_return_the_summed_loss_of_their_logits():
    torch.manual_seed(0)
    cfg = ModelConfig(task="translate", vocab_size=30, d_model=16, n_heads=2,
                      n_enc_layers=1, n_dec_layers=1, d_ff=32, dropout=0.0, max_len=20)
    model = Seq2Seq(cfg)
    src, tgt_in = torch.randint(4, 30, (3, 7)), torch.randint(4, 30, (3, 5))
    tgt_out = torch.randint(4, 30, (3, 5))
    tgt_out[0, 3:] = cfg.pad_id
    ref = F.cross_entropy(model(src, tgt_in).flatten(0, 1), tgt_out.flatten(), ignore_index=cfg.pad_id,
                          label_smoothing=0.1, reduction="sum")
    ref.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    loss = model(src, tgt_in, target=tgt_out, smoothing=0.1)
    loss.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    for n, p in model.named_parameters():  # the tied output/embedding matrix included
        torch.testing.assert_close(p.grad, want[n], rtol=1e-4, atol=1e-5, msg=n)

    mlm = MaskedLM(ModelConfig(task="sentiment", vocab_size=30, d_model=16,
                               n_heads=2, n_enc_layers=1, n_dec_layers=0, d_ff=32, dropout=0.0, max_len=20,
                               num_labels=0))
    at = torch.zeros(3, 7, dtype=torch.bool)
    at[:, 2] = at[1, 5] = True
    target = src[at]
    torch.testing.assert_close(mlm(src, at, target=target),
                               F.cross_entropy(mlm(src, at), target, reduction="sum"), rtol=1e-5, atol=1e-4)
