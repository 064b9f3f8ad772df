"""The two model families: ``Seq2Seq`` (translate, summarize) and ``Classifier`` (sentiment).

Both embed tokens as ``embedding * sqrt(D)`` plus fixed sinusoidal positions (or, with
``cfg.positions == "rope"``, rotate self-attention queries and keys instead), then run pre-LN
transformer stacks from ``layers.py``. ``build_model(cfg)`` is the only factory.

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
from attn_cli.layers import (
    Decoder,
    DecoderCache,
    Encoder,
    MultiHeadAttention,
    RotaryPositions,
    SinusoidalPositions,
    padding_mask,
    sdpa_mask,
)


def _positions(cfg: ModelConfig) -> tuple[SinusoidalPositions | None, RotaryPositions | None]:
    """(encodings added to the embeddings, rotary positions shared by every self-attention):
    exactly one of them, by ``cfg.positions``."""
    if cfg.positions == "rope":
        return None, RotaryPositions(cfg.d_model // cfg.n_heads, cfg.max_len)
    return SinusoidalPositions(cfg.d_model, cfg.max_len), None


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
        self.pos, rope = _positions(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        dims = (d, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.attn_dropout, rope)
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
        return self.drop(self.pos(x, offset) if self.pos is not None else x)  # (B, T, D)

    def new_cache(self) -> DecoderCache:
        """An empty KV cache for incremental ``decode`` calls."""
        return DecoderCache.empty(self.cfg.n_dec_layers)

    def encode(self, src_ids: Tensor) -> tuple[Tensor, Tensor]:
        """src_ids (B, S) -> (memory (B, S, D), src_mask (B, 1, 1, S) bool, True = token)."""
        src_mask = padding_mask(src_ids, self.cfg.pad_id)  # (B, 1, 1, S)
        memory, _ = self.encoder(self._embed(self.src_embed, src_ids), src_mask)  # (B, S, D)
        return memory, src_mask

    def decode(self, tgt_in_ids: Tensor, memory: Tensor, src_mask: Tensor,
               cache: DecoderCache | None = None) -> Tensor:
        """Next-token logits (B, T, V) for decoder inputs tgt_in_ids (B, T).

        Without a cache, tgt_in_ids is the whole (right-padded) prefix starting with BOS. With a
        cache, it holds only the new positions; their positions start at ``cache.length``, and
        the cache is extended in place.
        """
        offset = cache.length if cache is not None else 0
        x = self._embed(self.tgt_embedding, tgt_in_ids, offset)  # (B, T, D)
        h, _, _ = self.decoder(x, memory, src_mask, cache)  # (B, T, D)
        return F.linear(h, self.output_weight)  # (B, T, V)

    def forward(self, src_ids: Tensor, tgt_in_ids: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V) for src (B, S) and decoder inputs (B, T)."""
        memory, src_mask = self.encode(src_ids)
        return self.decode(tgt_in_ids, memory, src_mask)

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


class Classifier(nn.Module):
    """Encoder, pooling over real tokens (``cfg.pooling``: mean, max, or attention from one
    learned query), and a Linear-tanh-Linear head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.num_labels < 2:
            raise ValueError(f"Classifier needs num_labels >= 2, got {cfg.num_labels}")
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.pos, rope = _positions(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg.n_enc_layers, d, cfg.n_heads, cfg.d_ff, cfg.dropout,
                               cfg.attn_dropout, rope)
        if cfg.pooling == "attention":  # multi-head attention from one learned query
            self.pool_attn = MultiHeadAttention(d, cfg.n_heads, cfg.attn_dropout, cross=True)
        self.head = nn.Sequential(
            nn.Linear(d, d), nn.Tanh(), nn.Dropout(cfg.dropout), nn.Linear(d, cfg.num_labels)
        )
        self.embed_scale = math.sqrt(d)
        _init_weights(self, d)
        if cfg.pooling == "attention":
            # Zero: every head starts with equal weights on the real tokens (a mean of the
            # values). A vector, so that AdamW does not decay it (matrices only).
            self.pool_query = nn.Parameter(torch.zeros(d))

    def _encode(self, ids: Tensor, need_weights: bool = False
                ) -> tuple[Tensor, Tensor, list[Tensor]]:
        mask = padding_mask(ids, self.cfg.pad_id)  # (B, 1, 1, S)
        x = self.embed(ids) * self.embed_scale  # (B, S, D)
        x = self.drop(self.pos(x) if self.pos is not None else x)
        h, maps = self.encoder(x, mask, need_weights)  # (B, S, D)
        return h, mask, maps

    def pooled(self, ids: Tensor) -> Tensor:
        """ids (B, S) -> the encoder outputs of the non-pad tokens pooled into one vector (B, D)."""
        h, mask, _ = self._encode(ids)
        return self._pool(h, mask[:, 0, 0, :])

    @staticmethod
    def _pad_to_minus_inf(h: Tensor, keep: Tensor) -> Tensor:
        """h (B, S, D) with pad positions (keep (B, S) False) at -inf, for a max over S."""
        return h.masked_fill(~keep[:, :, None], float("-inf"))

    def _attend_pool(self, h: Tensor, keep: Tensor,
                     need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attention pooling: h (B, S, D), keep (B, S) -> (B, D) and, if need_weights, the
        head-averaged weights (B, S). An all-pad row attends to its pads (so that the softmax
        stays finite) and is zeroed by the callers."""
        has_real = keep.any(1, keepdim=True)  # (B, 1)
        mask = sdpa_mask((keep | ~has_real)[:, None, None, :])  # (B, 1, 1, S) or None
        query = self.pool_query.expand(h.size(0), 1, -1)  # (B, 1, D)
        out, w = self.pool_attn(query, memory=h, mask=mask, need_weights=need_weights)
        return out[:, 0], (w[:, :, 0].mean(1) if w is not None else None)  # (B, D), (B, S)

    def _pool(self, h: Tensor, keep: Tensor) -> Tensor:
        """h (B, S, D), keep (B, S) bool -> (B, D); an all-pad row pools to zeros."""
        if self.cfg.pooling == "attention":
            pooled, _ = self._attend_pool(h, keep)  # (B, D)
        elif self.cfg.pooling == "max":
            pooled = self._pad_to_minus_inf(h, keep).amax(1)  # (B, D)
        else:
            w = keep[:, :, None].to(h.dtype)  # (B, S, 1)
            return (h * w).sum(1) / w.sum(1).clamp(min=1.0)  # (B, D): an all-pad row is 0 already
        return pooled.masked_fill(~keep.any(1, keepdim=True), 0.0)

    def pool_shares(self, ids: Tensor) -> Tensor:
        """ids (B, S) -> (B, S): each position's share of the pooled vector (rows sum to 1 over
        real tokens): 1/n for mean pooling, the fraction of dimensions it wins for max pooling,
        the pooling attention's weight (mean over heads) for attention pooling."""
        h, mask, _ = self._encode(ids)
        keep = mask[:, 0, 0, :]  # (B, S)
        if self.cfg.pooling == "attention":
            _, w = self._attend_pool(h, keep, need_weights=True)  # (B, S)
            return w.float() * keep
        if self.cfg.pooling == "max":
            winner = self._pad_to_minus_inf(h, keep).argmax(1)  # (B, D)
            wins = torch.zeros(keep.shape, dtype=torch.float32, device=h.device)
            wins.scatter_add_(1, winner, torch.ones_like(winner, dtype=torch.float32))
            return (wins / h.size(-1)) * keep
        w = keep.to(torch.float32)
        return w / w.sum(1, keepdim=True).clamp(min=1.0)

    def forward(self, ids: Tensor, mix: tuple[Tensor, float] | None = None,
                lm_at: Tensor | None = None) -> Tensor:
        """ids (B, S) -> class logits (B, C). ``mix`` = (perm (B,), lam): training-time mixup of
        the pooled vectors, row i becoming lam * row i + (1 - lam) * row perm[i].
        ``lm_at`` (B, S) bool: masked-LM pretraining instead; returns vocabulary logits (N, V)
        at its N True positions, through the (tied) input embedding matrix."""
        if lm_at is not None:
            h, _, _ = self._encode(ids)  # (B, S, D)
            return h[lm_at] @ self.embed.weight.t()  # (N, V)
        pooled = self.pooled(ids)  # (B, D)
        if mix is not None:
            perm, lam = mix
            pooled = lam * pooled + (1.0 - lam) * pooled[perm]  # (B, D)
        return self.head(pooled)  # (B, C)

    def attention_maps(self, ids: Tensor) -> Tensor:
        """Per-layer self-attention weights (L, B, H, S, S), explicit-softmax path."""
        _, _, maps = self._encode(ids, need_weights=True)
        return torch.stack(maps)


def build_model(cfg: ModelConfig) -> Seq2Seq | Classifier:
    """The model for ``cfg.task``: Seq2Seq for translate/summarize, Classifier for sentiment."""
    return Seq2Seq(cfg) if cfg.is_seq2seq else Classifier(cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameter values (a tied matrix counts once)."""
    unique = {id(p): p for p in model.parameters()}
    return sum(p.numel() for p in unique.values())
