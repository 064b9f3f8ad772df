"""The two model families: ``Seq2Seq`` (translate, summarize) and ``Classifier`` (sentiment).

Both embed tokens as ``embedding * sqrt(D)`` plus fixed sinusoidal positions, then run pre-LN
transformer stacks from ``attn_cli.model.layers``. ``build_model(cfg)`` is the only factory.

Embedding sharing in ``Seq2Seq``:
  * joint vocabulary (``tgt_vocab_size is None``): one embedding for source and target;
  * separate vocabularies: separate source and target embeddings;
  * ``tie_embeddings``: the output projection is the target embedding matrix (so with a joint
    vocabulary one matrix serves all three); otherwise it is its own bias-free Linear.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attn_cli.config import ModelConfig
from attn_cli.model.layers import (
    Decoder,
    DecoderCache,
    Encoder,
    MultiHeadAttention,
    SinusoidalPositions,
    padding_mask,
)
from attn_cli.model.losses import linear_cross_entropy


def _init_weights(model: nn.Module, d_model: int) -> None:
    """Xavier-uniform Linears with zero bias, N(0, D^-0.5) embeddings, per-projection qkv."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=d_model**-0.5)
        for m in model.modules():
            if isinstance(m, MultiHeadAttention):
                m.reset_parameters()


class Seq2Seq(nn.Module):
    """Encoder-decoder transformer: ``encode`` once, ``decode`` all at once or step by step."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if not cfg.is_seq2seq:
            raise ValueError(f"Seq2Seq needs a seq2seq task, got {cfg.task!r}")
        self.cfg = cfg
        d = cfg.d_model
        tgt_vocab = cfg.tgt_vocab_size or cfg.vocab_size
        self.src_embed = nn.Embedding(cfg.vocab_size, d)
        # None = the target shares src_embed (joint vocabulary).
        self.tgt_embed = nn.Embedding(tgt_vocab, d) if cfg.tgt_vocab_size is not None else None
        # None = the output projection is tied to the target embedding.
        self.out_proj = None if cfg.tie_embeddings else nn.Linear(d, tgt_vocab, bias=False)
        self.pos = SinusoidalPositions(d, cfg.max_len)
        self.drop = nn.Dropout(cfg.dropout)
        dims = (d, cfg.n_heads, cfg.d_ff, cfg.dropout)
        self.encoder = Encoder(cfg.n_enc_layers, *dims)
        self.decoder = Decoder(cfg.n_dec_layers, *dims)
        self.embed_scale = math.sqrt(d)
        _init_weights(self, d)
        if self.out_proj is not None:
            nn.init.normal_(self.out_proj.weight, std=d**-0.5)

    @property
    def tgt_embedding(self) -> nn.Embedding:
        """The embedding of target tokens (src_embed when the vocabulary is joint)."""
        return self.src_embed if self.tgt_embed is None else self.tgt_embed

    @property
    def output_weight(self) -> Tensor:
        """(V, D) matrix of the output projection (the target embedding when tied)."""
        return self.tgt_embedding.weight if self.out_proj is None else self.out_proj.weight

    def _embed(self, emb: nn.Embedding, ids: Tensor, offset: int = 0) -> Tensor:
        x = emb(ids) * self.embed_scale  # (B, T, D)
        return self.drop(self.pos(x, offset))  # (B, T, D)

    def new_cache(self) -> DecoderCache:
        """An empty KV cache for incremental ``decode`` calls."""
        return DecoderCache.empty(self.cfg.n_dec_layers)

    def encode(self, src_ids: Tensor, padded: bool | None = None) -> tuple[Tensor, Tensor]:
        """src_ids (B, S) -> (memory (B, S, D), src_mask (B, 1, 1, S) bool, True = token).
        ``padded``: whether src_ids holds padding, when the caller knows (no device read)."""
        src_mask = padding_mask(src_ids, self.cfg.pad_id)  # (B, 1, 1, S)
        memory, _ = self.encoder(self._embed(self.src_embed, src_ids), src_mask, padded=padded)  # (B, S, D)
        return memory, src_mask

    def decode(self, tgt_in_ids: Tensor, memory: Tensor, src_mask: Tensor | None,
               cache: DecoderCache | None = None, padded: bool | None = None) -> Tensor:
        """Next-token logits (B, T, V) for decoder inputs tgt_in_ids (B, T).

        Without a cache, tgt_in_ids is the whole (right-padded) prefix starting with BOS. With a
        cache, it holds only the new positions; their positions start at ``cache.length``, and
        the cache is extended in place.
        """
        return F.linear(self._decoded(tgt_in_ids, memory, src_mask, cache, padded),
                        self.output_weight)  # (B, T, V)

    def _decoded(self, tgt_in_ids: Tensor, memory: Tensor, src_mask: Tensor,
                 cache: DecoderCache | None = None, padded: bool | None = None) -> Tensor:
        """The decoder's output states (B, T, D), before the output projection."""
        offset = cache.length if cache is not None else 0
        x = self._embed(self.tgt_embedding, tgt_in_ids, offset)  # (B, T, D)
        h, _, _ = self.decoder(x, memory, src_mask, cache, padded=padded)  # (B, T, D)
        return h

    def forward(self, src_ids: Tensor, tgt_in_ids: Tensor, target: Tensor | None = None,
                smoothing: float = 0.0, padded: bool | None = None) -> Tensor:
        """Teacher-forced logits (B, T, V) for src (B, S) and decoder inputs (B, T); with
        ``target`` (B, T), the summed cross-entropy instead (pads ignored), computed without
        the whole logits matrix (:func:`losses.linear_cross_entropy`). ``padded``: whether
        src_ids holds padding, when the caller knows (a training batch: no device read)."""
        memory, src_mask = self.encode(src_ids, padded)
        if target is None:
            return self.decode(tgt_in_ids, memory, src_mask, padded=padded)
        h = self._decoded(tgt_in_ids, memory, src_mask, padded=padded)  # (B, T, D)
        return linear_cross_entropy(h.flatten(0, 1), self.output_weight, target.flatten(),
                                    ignore_index=self.cfg.pad_id, smoothing=smoothing)

    def attention_maps(self, src_ids: Tensor, tgt_in_ids: Tensor) -> dict[str, Tensor]:
        """Attention weights through the explicit-softmax path, stacked over layers:
        "encoder" (L, B, H, S, S), "decoder" (L, B, H, T, T), "cross" (L, B, H, T, S)."""
        src_mask = padding_mask(src_ids, self.cfg.pad_id)  # (B, 1, 1, S)
        x = self._embed(self.src_embed, src_ids)  # (B, S, D)
        memory, enc = self.encoder(x, src_mask, need_weights=True)
        y = self._embed(self.tgt_embedding, tgt_in_ids)  # (B, T, D)
        _, dec, cross = self.decoder(y, memory, src_mask, need_weights=True)
        return {"encoder": torch.stack(enc), "decoder": torch.stack(dec),
                "cross": torch.stack(cross)}

    def cross_attention(self, src_ids: Tensor, tgt_in_ids: Tensor) -> Tensor:
        """Per-layer cross-attention weights (L, B, H, T, S)."""
        return self.attention_maps(src_ids, tgt_in_ids)["cross"]


class TextEncoder(nn.Module):
    """Token embedding, sinusoidal positions and an encoder stack: the part a classifier and
    its masked-LM pretraining share (same parameter names, so one initialises the other)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.pos = SinusoidalPositions(d, cfg.max_len)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg.n_enc_layers, d, cfg.n_heads, cfg.d_ff, cfg.dropout)
        self.embed_scale = math.sqrt(d)

    def encode(self, ids: Tensor, need_weights: bool = False, padded: bool | None = None
               ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """ids (B, S) -> (encoder outputs (B, S, D), mask (B, 1, 1, S) True = token, and with
        need_weights L self-attention maps (B, H, S, S)). ``padded``: whether ids holds padding,
        when the caller knows."""
        mask = padding_mask(ids, self.cfg.pad_id)  # (B, 1, 1, S)
        x = self.drop(self.pos(self.embed(ids) * self.embed_scale))  # (B, S, D)
        h, maps = self.encoder(x, mask, need_weights, padded=padded)  # (B, S, D)
        return h, mask, maps

    def attention_maps(self, ids: Tensor) -> Tensor:
        """Per-layer self-attention weights (L, B, H, S, S), explicit-softmax path."""
        _, _, maps = self.encode(ids, need_weights=True)
        return torch.stack(maps)


class Classifier(TextEncoder):
    """The encoder, the mean of its outputs over real tokens, and a Linear-tanh-Linear head."""

    def __init__(self, cfg: ModelConfig) -> None:
        if cfg.num_labels < 2:
            raise ValueError(f"Classifier needs num_labels >= 2, got {cfg.num_labels}")
        super().__init__(cfg)
        d = cfg.d_model
        self.head = nn.Sequential(
            nn.Linear(d, d), nn.Tanh(), nn.Dropout(cfg.dropout), nn.Linear(d, cfg.num_labels)
        )
        _init_weights(self, d)

    def pooled(self, ids: Tensor, padded: bool | None = None) -> Tensor:
        """ids (B, S) -> the mean of the encoder outputs of the non-pad tokens (B, D); an
        all-pad row pools to zeros."""
        h, mask, _ = self.encode(ids, padded=padded)
        w = mask[:, 0, 0, :, None].to(h.dtype)  # (B, S, 1)
        return (h * w).sum(1) / w.sum(1).clamp(min=1.0)  # (B, D)

    def forward(self, ids: Tensor, padded: bool | None = None) -> Tensor:
        """ids (B, S) -> class logits (B, C); ``padded`` as in :meth:`encode`."""
        return self.head(self.pooled(ids, padded))  # (B, C)


class MaskedLM(TextEncoder):
    """The classifier's encoder pretrained as a masked language model (``attn pretrain
    sentiment``): vocabulary logits through the tied input embedding."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        _init_weights(self, cfg.d_model)

    def forward(self, ids: Tensor, at: Tensor, target: Tensor | None = None,
                padded: bool | None = None) -> Tensor:
        """ids (B, S) with masked pieces, at (B, S) bool -> logits (N, V) at the N True places;
        with ``target`` (N,), their summed cross-entropy instead (:func:`losses.linear_cross_entropy`)."""
        h, _, _ = self.encode(ids, padded=padded)  # (B, S, D)
        if target is not None:
            return linear_cross_entropy(h[at], self.embed.weight, target)
        return h[at] @ self.embed.weight.t()  # (N, V)


def build_model(cfg: ModelConfig) -> Seq2Seq | Classifier | MaskedLM:
    """The model for ``cfg.task``: Seq2Seq for translate/summarize, Classifier for sentiment
    (MaskedLM for a sentiment encoder without a head, ``num_labels == 0``: pretraining)."""
    if cfg.is_seq2seq:
        return Seq2Seq(cfg)
    return Classifier(cfg) if cfg.num_labels else MaskedLM(cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameter values (a tied matrix counts once)."""
    unique = {id(p): p for p in model.parameters()}
    return sum(p.numel() for p in unique.values())
