"""Tests for config.ModelConfig, layers, model and greedy decoding (tiny models, CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attn_cli.config import PRESETS, ModelConfig, model_config_from_preset
from attn_cli.infer.decoding import greedy_decode, next_token_logprobs
from attn_cli.model.layers import (
    MultiHeadAttention,
    attention_reference,
    causal_mask,
    padding_mask,
)
from attn_cli.model.transformer import Classifier, Seq2Seq, build_model, count_parameters

PAD, BOS, EOS = 0, 2, 3
V = 20


def tiny_cfg(task: str = "translate", **kw) -> ModelConfig:
    base = dict(task=task, vocab_size=V, d_model=32, n_heads=4, n_enc_layers=2,
                n_dec_layers=0 if task == "sentiment" else 2, d_ff=64, max_len=64,
                num_labels=3 if task == "sentiment" else 0)
    base.update(kw)
    return ModelConfig(**base)


def rand_ids(b: int, t: int, gen: torch.Generator, vocab: int = V) -> torch.Tensor:
    return torch.randint(4, vocab, (b, t), generator=gen)


@pytest.fixture
def gen() -> torch.Generator:
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)


# --------------------------------------------------------------------------- config


def test_config_roundtrip_and_presets():
    cfg = model_config_from_preset("small", "translate", 8000, dropout=0.2)
    assert cfg.d_model == 256 and cfg.n_dec_layers == 3 and cfg.dropout == 0.2
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    sent = model_config_from_preset("tiny", "sentiment", 100, num_labels=2)
    assert sent.n_dec_layers == 0 and not sent.is_seq2seq and cfg.is_seq2seq
    assert set(PRESETS) == {"tiny", "small", "base", "big"}
    assert ModelConfig.from_dict({**cfg.to_dict(), "dropout": 0}).dropout == 0.0


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(d_model=30), "d_model"),
        (dict(task="poetry"), "task"),
        (dict(task="sentiment", n_dec_layers=0, num_labels=1), "num_labels"),
        (dict(dropout=1.0), "dropout"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(n_heads=0), "n_heads"),
        (dict(d_ff=-1), "d_ff"),
        (dict(n_dec_layers=0), "n_dec_layers"),
        (dict(tgt_vocab_size=0), "tgt_vocab_size"),
        (dict(eos_id=V), "eos_id"),
        (dict(d_model="32"), "d_model"),
        (dict(tie_embeddings=1), "tie_embeddings"),
        (dict(n_heads=True), "n_heads"),
    ],
)
def test_config_validation_names_field(kw, field):
    with pytest.raises(ValueError, match=field):
        tiny_cfg(**kw)


def test_from_dict_rejects_unknown_key_and_wrong_type():
    d = tiny_cfg().to_dict()
    with pytest.raises(ValueError, match="n_layer"):
        ModelConfig.from_dict({**d, "n_layer": 3})
    with pytest.raises(ValueError, match="d_ff"):
        ModelConfig.from_dict({**d, "d_ff": 64.0})
    with pytest.raises(ValueError, match="vocab_size"):
        ModelConfig.from_dict({k: v for k, v in d.items() if k != "vocab_size"})
    with pytest.raises(ValueError, match="preset"):
        model_config_from_preset("huge", "translate", 100)


# --------------------------------------------------------------------------- layers


def test_masks():
    ids = torch.tensor([[5, 6, PAD], [7, PAD, PAD]])
    m = padding_mask(ids, PAD)
    assert m.shape == (2, 1, 1, 3) and m.dtype == torch.bool
    assert m[:, 0, 0].tolist() == [[True, True, False], [True, False, False]]
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False],
                                      [True, True, True]]
    # two new queries at positions 2 and 3 of 4 keys
    assert causal_mask(2, k=4).tolist() == [[True, True, True, False], [True, True, True, True]]


@pytest.mark.parametrize("cross", [False, True])
def test_sdpa_matches_reference_with_padding(cross, gen):
    torch.manual_seed(1)
    mha = MultiHeadAttention(32, 4, cross=cross).double().eval()
    x = torch.randn(3, 5, 32, dtype=torch.float64, generator=gen)
    mem = torch.randn(3, 7, 32, dtype=torch.float64, generator=gen)
    keys_ids = torch.tensor([[5] * 7, [5] * 4 + [PAD] * 3, [5] * 2 + [PAD] * 5])
    mask = padding_mask(keys_ids if cross else keys_ids[:, :5], PAD)
    memory = mem if cross else None
    fast, none = mha(x, memory=memory, mask=mask)
    slow, w = mha(x, memory=memory, mask=mask, need_weights=True)
    assert none is None and w is not None
    torch.testing.assert_close(fast, slow, atol=1e-10, rtol=0)
    # masked keys get exactly zero weight; rows are distributions
    assert torch.all(w.masked_select(~mask.expand_as(w)) == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    # and the reference itself agrees with SDPA on raw tensors, causal + padding, float32
    q, k, v = (torch.randn(2, 4, 6, 8, generator=gen) for _ in range(3))
    m = padding_mask(torch.tensor([[5] * 6, [5] * 3 + [PAD] * 3]), PAD) & causal_mask(6)
    ref, _ = attention_reference(q, k, v, m)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=m), ref,
                               atol=1e-5, rtol=0)


def test_causal_self_attention_fast_path_matches_reference(gen):
    mha = MultiHeadAttention(32, 4).double().eval()
    x = torch.randn(2, 6, 32, dtype=torch.float64, generator=gen)
    fast, _ = mha(x, causal=True)  # is_causal=True path
    slow, w = mha(x, causal=True, need_weights=True)  # explicit mask path
    torch.testing.assert_close(fast, slow, atol=1e-10, rtol=0)
    assert torch.all(w[..., ~causal_mask(6)] == 0)


# --------------------------------------------------------------------------- model


def test_seq2seq_and_classifier_forward_backward(gen):
    s2s = build_model(tiny_cfg())
    src, tgt = rand_ids(2, 7, gen), rand_ids(2, 5, gen)
    src[1, 4:] = PAD
    logits = s2s(src, tgt)
    assert isinstance(s2s, Seq2Seq) and logits.shape == (2, 5, V)
    F.cross_entropy(logits.reshape(-1, V), rand_ids(2, 5, gen).reshape(-1)).backward()
    clf = build_model(tiny_cfg("sentiment"))
    out = clf(src)
    assert isinstance(clf, Classifier) and out.shape == (2, 3)
    F.cross_entropy(out, torch.tensor([0, 2])).backward()
    for model in (s2s, clf):
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_padding_invariance(gen):
    s2s = Seq2Seq(tiny_cfg()).eval()
    clf = Classifier(tiny_cfg("sentiment")).eval()
    src = rand_ids(2, 6, gen)
    src[1, 4:] = PAD
    padded = torch.cat([src, torch.full((2, 5), PAD)], dim=1)
    with torch.no_grad():
        mem, _ = s2s.encode(src)
        mem_p, mask_p = s2s.encode(padded)
        torch.testing.assert_close(mem_p[0, :6], mem[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(mem_p[1, :4], mem[1, :4], atol=1e-5, rtol=0)
        tgt = rand_ids(2, 4, gen)
        torch.testing.assert_close(s2s(padded, tgt), s2s(src, tgt), atol=1e-5, rtol=0)
        torch.testing.assert_close(clf(padded), clf(src), atol=1e-5, rtol=0)
        # sanity: the pad tokens would matter if they were not masked
        mask_p[:] = True
        h = s2s.decode(tgt, mem_p, mask_p)
        assert not torch.allclose(h, s2s(src, tgt), atol=1e-3)


def test_decoder_is_causal(gen):
    model = Seq2Seq(tiny_cfg()).eval()
    src, tgt = rand_ids(2, 6, gen), rand_ids(2, 6, gen)
    tgt2 = tgt.clone()
    tgt2[:, 4] = (tgt[:, 4] + 1 - 4) % (V - 4) + 4  # change position 4
    with torch.no_grad():
        a, b = model(src, tgt), model(src, tgt2)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-6, rtol=0)
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3


def test_cached_decode_matches_full_decode(gen):
    model = Seq2Seq(tiny_cfg()).double().eval()
    src, tgt = rand_ids(2, 6, gen), rand_ids(2, 7, gen)
    with torch.no_grad():
        full = model(src, tgt)
        mem, mask = model.encode(src)
        cache = model.new_cache()
        parts = [model.decode(tgt[:, :3], mem, mask, cache)]  # a 3-token prefix,
        assert cache.length == 3
        parts.append(model.decode(tgt[:, 3:5], mem, mask, cache))  # a 2-token chunk (offset mask)
        parts += [model.decode(tgt[:, i:i + 1], mem, mask, cache) for i in range(5, 7)]  # steps
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-10, rtol=0)
    assert cache.length == 7 and cache.cross_attn[0].length == 6


def greedy_decode_nocache(model: Seq2Seq, src_ids, max_len, min_len=0):
    """Reference: recompute the whole prefix at every step."""
    cfg = model.cfg
    with torch.no_grad():
        mem, mask = model.encode(src_ids)
        ys = torch.full((src_ids.size(0), 1), cfg.bos_id)
        scores = torch.zeros(src_ids.size(0))
        done = torch.zeros(src_ids.size(0), dtype=torch.bool)
        for step in range(max_len):
            logp = next_token_logprobs(model.decode(ys, mem, mask)[:, -1], model, step < min_len)
            lp, tok = logp.max(-1)
            tok = tok.masked_fill(done, cfg.pad_id)
            scores += lp.masked_fill(done, 0.0)
            ys = torch.cat([ys, tok[:, None]], 1)
            done |= tok == cfg.eos_id
            if done.all():
                break
    return ys[:, 1:], scores


class EosAt(Seq2Seq):
    """A Seq2Seq whose EOS logit is boosted from a per-row target position on."""

    eos_from: torch.Tensor

    def decode(self, tgt_in_ids, memory, src_mask, cache=None, padded=None):
        offset = cache.length if cache is not None else 0
        logits = super().decode(tgt_in_ids, memory, src_mask, cache, padded)
        pos = offset + torch.arange(tgt_in_ids.size(1))  # (T,)
        boost = (pos[None, :] >= self.eos_from[:, None]).to(logits.dtype) * 1e3  # (B, T)
        logits[..., self.cfg.eos_id] += boost
        return logits


@pytest.mark.parametrize("min_len", [0, 3])
def test_greedy_cache_matches_nocache(min_len, gen):
    torch.manual_seed(3)
    model = EosAt(tiny_cfg()).double().eval()
    model.eos_from = torch.tensor([0, 2, 5, 10_000])
    src = rand_ids(4, 6, gen)
    src[2, 3:] = PAD
    ids, scores = greedy_decode(model, src, max_len=8, min_len=min_len)
    ref_ids, ref_scores = greedy_decode_nocache(model, src, max_len=8, min_len=min_len)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=0)
    assert ids.shape[0] == 4 and ids.shape[1] <= 8
    for row, stop in enumerate([0, 2, 5]):
        stop = max(stop, min_len)
        eos_at = (ids[row] == EOS).nonzero()[0].item()
        assert eos_at <= stop
        assert eos_at >= min_len
        assert (ids[row, eos_at + 1:] == PAD).all()
    assert (scores <= 0).all() and (scores[1:] < 0).all() and torch.isfinite(scores).all()
    assert not (ids == BOS).any()


def test_greedy_stops_when_all_finished(gen):
    model = EosAt(tiny_cfg()).eval()
    model.eos_from = torch.tensor([1, 2])
    ids, _ = greedy_decode(model, rand_ids(2, 5, gen), max_len=20)
    assert ids.shape[1] <= 3 and (ids == EOS).any(dim=1).all()


def test_embedding_tying_and_parameter_count():
    joint = Seq2Seq(tiny_cfg())
    assert joint.output_weight is joint.src_embed.weight
    assert joint.tgt_embedding is joint.src_embed and joint.tgt_embed is None
    d, f, n = 32, 64, 2
    attn = 4 * d * d + d  # q, k, v without bias; out projection with bias
    ffn = 2 * d * f + f + d
    enc_layer, dec_layer = attn + ffn + 4 * d, 2 * attn + ffn + 6 * d
    expected = V * d + n * enc_layer + n * dec_layer + 2 * 2 * d
    assert count_parameters(joint) == expected
    sep = Seq2Seq(tiny_cfg(tgt_vocab_size=30))
    assert sep.tgt_embed is not None and sep.output_weight is sep.tgt_embed.weight
    assert sep.output_weight.shape == (30, d)
    assert count_parameters(sep) == expected + 30 * d
    untied = Seq2Seq(tiny_cfg(tie_embeddings=False))
    assert untied.output_weight is not untied.src_embed.weight
    assert count_parameters(untied) == expected + V * d
    # no tensor appears twice in the state dict (safetensors-friendly)
    ptrs = [t.data_ptr() for t in joint.state_dict().values()]
    assert len(ptrs) == len(set(ptrs))


def test_attention_maps_shapes_and_padding(gen):
    s2s = Seq2Seq(tiny_cfg()).eval()
    src, tgt = rand_ids(2, 6, gen), rand_ids(2, 4, gen)
    src[1, 3:] = PAD
    with torch.no_grad():
        maps = s2s.attention_maps(src, tgt)
        cross = s2s.cross_attention(src, tgt)
        attn = Classifier(tiny_cfg("sentiment")).eval().attention_maps(src)
    assert maps["encoder"].shape == (2, 2, 4, 6, 6) and maps["decoder"].shape == (2, 2, 4, 4, 4)
    assert cross.shape == (2, 2, 4, 4, 6) and attn.shape == (2, 2, 4, 6, 6)
    assert torch.all(cross[:, 1, :, :, 3:] == 0) and torch.all(attn[:, 1, :, :, 3:] == 0)
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, 2, 4, 4))
    assert torch.all(maps["decoder"][..., ~causal_mask(4)] == 0)


def test_all_pad_row_is_finite():
    clf = Classifier(tiny_cfg("sentiment")).eval()
    ids = torch.tensor([[5, 6, 7], [PAD, PAD, PAD]])
    with torch.no_grad():
        assert torch.isfinite(clf(ids)).all()
        maps = clf.attention_maps(ids)
    assert torch.isfinite(maps).all() and torch.all(maps[:, 1] == 0)
    torch.testing.assert_close(clf(ids[:1]), clf(ids)[:1])


def test_mean_pooling_averages_real_tokens_only(gen):
    model = Classifier(tiny_cfg("sentiment")).eval()
    ids = rand_ids(3, 7, gen)
    ids[0, 4:] = 0  # padding
    ids[2, :] = 0  # an all-pad row
    with torch.no_grad():
        h, _, _ = model.encode(ids)
        want = torch.stack([h[0, :4].mean(0), h[1].mean(0), torch.zeros(h.size(-1))])
        torch.testing.assert_close(model.pooled(ids), want)
        torch.testing.assert_close(model(ids[:1, :4]), model(ids)[:1])  # padding changes nothing


def test_retired_model_fields_load_at_their_only_value():
    """config.json of earlier versions (attn_dropout, pooling, positions) still loads when it
    holds what this version builds, and names the field when it does not."""
    base = tiny_cfg("sentiment").to_dict()
    old = {**base, "attn_dropout": 0.0, "pooling": "mean", "positions": "sinusoidal"}
    assert ModelConfig.from_dict(old) == tiny_cfg("sentiment")
    with pytest.raises(ValueError, match="positions='rope', which this attn version no longer builds"):
        ModelConfig.from_dict({**base, "positions": "rope"})
    with pytest.raises(ValueError, match="pooling='max'"):
        ModelConfig.from_dict({**base, "pooling": "max"})


def test_kv_cache_append_grows_in_place_and_reorders():
    from attn_cli.model.layers import KVCache

    torch.manual_seed(0)
    c = KVCache()
    ks = [torch.randn(3, 2, t, 4) for t in (5, 1, 12, 1)]  # crosses the first capacity (16)
    for k in ks:
        got_k, got_v = c.append(k, -k)
    want = torch.cat(ks, dim=2)
    assert c.length == 19 and torch.equal(got_k, want) and torch.equal(got_v, -want)
    c.reorder(torch.tensor([2, 0]))
    assert torch.equal(c.k, want[[2, 0]]) and torch.equal(c.v, -want[[2, 0]])
    c.append(torch.ones(2, 2, 1, 4), torch.zeros(2, 2, 1, 4))
    assert c.length == 20 and torch.equal(c.k[:, :, :19], want[[2, 0]]) and (c.k[:, :, 19] == 1).all()


def _sdpa_masks(monkeypatch) -> list:
    """Record the attn_mask of every F.scaled_dot_product_attention call the layers make."""
    import attn_cli.model.layers as layers

    seen, real = [], layers.F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append(attn_mask)
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", spy)
    return seen


def test_unpadded_batches_reach_sdpa_without_a_mask_so_flash_can_run(monkeypatch, gen):
    """CUDA's flash kernel takes no attn_mask: a batch without padding must not pass one."""
    model = Seq2Seq(tiny_cfg()).eval()
    src, tgt = rand_ids(2, 7, gen), rand_ids(2, 5, gen)
    seen = _sdpa_masks(monkeypatch)
    with torch.no_grad():
        full = model(src, tgt)
    assert len(seen) == 6 and all(m is None for m in seen)  # 2 enc self, 2 dec self, 2 cross
    seen.clear()
    padded = src.clone()
    padded[1, 4:] = PAD
    with torch.no_grad():
        out = model(padded, tgt)
        ref = model(padded[1:, :4], tgt[1:])  # the same sentence without its padding
    assert sum(m is not None for m in seen) == 4  # encoder self + cross attention keep the mask
    torch.testing.assert_close(out[1:], ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:1], full[:1], atol=1e-5, rtol=1e-5)
