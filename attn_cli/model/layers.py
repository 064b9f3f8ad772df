"""Transformer building blocks: masks, positions, attention with a KV cache, pre-LN layers.

Shape legend used in the ``# (...)`` comments across the package:
    B   batch size (sentences, or sentences x beams while decoding)
    S   source length (encoder positions)
    T   target length (decoder positions fed in this call)
    K   key/value length (S for cross-attention; past + new positions for cached self-attention)
    D   model width (d_model)
    H   attention heads
    Dh  head width (D / H)
    F   feed-forward hidden width (d_ff)
    V   vocabulary size
    L   number of layers
    C   number of classes (num_labels)

Masks are boolean with True = "may attend", and they are built only here (``padding_mask``,
``causal_mask``). Attention runs through ``F.scaled_dot_product_attention``; the explicit-softmax
``attention_reference`` exists to return weights (for explanations) and as the numerical
reference in tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --------------------------------------------------------------------------- masks


def padding_mask(ids: Tensor, pad_id: int) -> Tensor:
    """(B, S) token ids -> (B, 1, 1, S) bool, True at real (non-pad) tokens."""
    return (ids != pad_id)[:, None, None, :]  # (B, 1, 1, S)


def sdpa_mask(mask: Tensor | None, padded: bool | None = None) -> Tensor | None:
    """The padding mask to hand to attention: ``None`` when it keeps every position.

    A batch without padding needs no mask, and only a call without one may use SDPA's flash
    kernel on CUDA (a masked call falls back to the memory-efficient kernel). ``padded``: what
    the caller knows on the host (a training batch's collate does: no device read); None looks
    at the mask, which costs one device-to-host sync; under ``torch.compile`` the mask is then
    kept (no data-dependent branch in the graph).
    """
    if mask is None or padded is False:
        return None
    if padded or torch.compiler.is_compiling() or not bool(mask.all()):
        return mask
    return None


def causal_mask(t: int, device: torch.device | str | None = None, k: int | None = None) -> Tensor:
    """(T, K) bool, True where query i may attend key j.

    With ``k > t`` the queries are the *last* ``t`` of ``k`` positions (a cached decoding step),
    so query i sits at absolute position ``k - t + i`` and sees keys ``j <= k - t + i``.
    """
    k = t if k is None else k
    q_pos = torch.arange(k - t, k, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(k, device=device)[None, :]  # (1, K)
    return k_pos <= q_pos  # (T, K)


def attention_reference(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Explicit-softmax attention: returns (output (B, H, T, Dh), weights (B, H, T, K)).

    ``mask`` is bool, broadcastable to (B, H, T, K), True = attend. Matches
    ``F.scaled_dot_product_attention(q, k, v, attn_mask=mask)``, including its zero output for
    a query whose keys are all masked (an all-pad sequence).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, K)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if scores.dtype in (torch.float16, torch.bfloat16):
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    else:
        weights = torch.softmax(scores, dim=-1)  # (B, H, T, K)
    if mask is not None:  # a query that may attend nothing gets zeros, as in SDPA, not NaN
        weights = weights.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return weights @ v, weights  # (B, H, T, Dh), (B, H, T, K)


# --------------------------------------------------------------------------- positions


class SinusoidalPositions(nn.Module):
    """Fixed sine/cosine position encodings (no parameters), added to scaled embeddings."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
        freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                         * (-math.log(10000.0) / d_model))  # (D/2,)
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("pe", pe, persistent=False)  # (max_len, D); not in checkpoints
        self.max_len = max_len

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """(B, T, D) -> (B, T, D) with the encodings of positions offset .. offset+T-1 added."""
        t = x.size(1)
        if offset + t > self.max_len:
            raise ValueError(f"sequence of {offset + t} positions exceeds max_len={self.max_len}")
        return x + self.pe[offset:offset + t].to(x.dtype)  # (B, T, D)


# --------------------------------------------------------------------------- KV cache


@dataclass
class KVCache:
    """Keys and values an attention module keeps between decoding steps.

    ``k``/``v`` are set once (cross-attention) or grown by ``append`` (self-attention), which
    writes into buffers with spare room (doubling when full) instead of concatenating: one
    ``torch.cat`` per step would copy the whole past every step.
    """

    k: Tensor | None = None  # (B, H, K, Dh), a view of the first K positions of the buffer
    v: Tensor | None = None  # (B, H, K, Dh)
    _kbuf: Tensor | None = None  # (B, H, capacity, Dh)
    _vbuf: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add new positions k, v (B, H, T, Dh); returns all keys and values (B, H, K+T, Dh)."""
        n, t = self.length, k.size(2)
        if self._kbuf is None or self._vbuf is None or n + t > self._kbuf.size(2):
            cap = max(16, 2 * (n + t))
            kbuf, vbuf = k.new_empty(*k.shape[:2], cap, k.size(3)), v.new_empty(*v.shape[:2], cap, v.size(3))
            if n:
                kbuf[:, :, :n], vbuf[:, :, :n] = self.k, self.v
            self._kbuf, self._vbuf = kbuf, vbuf
        self._kbuf[:, :, n:n + t], self._vbuf[:, :, n:n + t] = k, v
        self.k, self.v = self._kbuf[:, :, :n + t], self._vbuf[:, :, :n + t]
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (B',) in that order (beam search, dropping finished rows)."""
        if self.k is None or self.v is None:
            return
        n = self.length
        if self._kbuf is not None and self._vbuf is not None:  # keep the spare room
            self._kbuf, self._vbuf = self._kbuf.index_select(0, index), self._vbuf.index_select(0, index)
            self.k, self.v = self._kbuf[:, :, :n], self._vbuf[:, :, :n]
        else:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


@dataclass
class DecoderCache:
    """Per-layer caches of a decoder: self-attention grows each step, cross-attention is fixed."""

    self_attn: list[KVCache] = field(default_factory=list)
    cross_attn: list[KVCache] = field(default_factory=list)

    @classmethod
    def empty(cls, n_layers: int) -> DecoderCache:
        return cls([KVCache() for _ in range(n_layers)], [KVCache() for _ in range(n_layers)])

    @property
    def length(self) -> int:
        """Target positions already decoded (the position offset of the next step)."""
        return self.self_attn[0].length if self.self_attn else 0

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (B',) in every layer, in that order."""
        for c in self.self_attn + self.cross_attn:
            c.reorder(index)


# --------------------------------------------------------------------------- attention


class MultiHeadAttention(nn.Module):
    """Multi-head attention, self (fused qkv projection) or cross (q and fused kv projections)."""

    def __init__(self, d_model: int, n_heads: int, cross: bool = False) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_heads, self.cross = d_model, n_heads, cross
        # No biases on q/k/v: a key bias is invisible after the softmax (its gradient is exactly
        # zero, which Adam would turn into noise-driven updates), and q/v biases add little.
        if cross:
            self.q_proj = nn.Linear(d_model, d_model, bias=False)
            self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        else:
            self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, -1).transpose(1, 2)  # (B, H, T, Dh)

    def _project(self, x: Tensor, memory: Tensor | None,
                 cache: KVCache | None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries from x; keys/values from x (self) or memory (cross), through the cache."""
        if not self.cross:
            q, k, v = self.qkv_proj(x).split(self.d_model, dim=-1)  # 3 x (B, T, D)
            q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
            if cache is not None:
                k, v = cache.append(k, v)  # (B, H, K, Dh): the past and the new positions
            return q, k, v
        q = self._split_heads(self.q_proj(x))  # (B, H, T, Dh)
        if cache is not None and cache.k is not None and cache.v is not None:
            return q, cache.k, cache.v
        if memory is None:
            raise ValueError("cross-attention needs memory (or a filled cache)")
        k, v = self.kv_proj(memory).split(self.d_model, dim=-1)  # 2 x (B, S, D)
        k, v = self._split_heads(k), self._split_heads(v)  # (B, H, S, Dh)
        if cache is not None:
            cache.k, cache.v = k, v
        return q, k, v

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from x (B, T, D) to itself or to ``memory`` (B, S, D).

        ``mask``: bool broadcastable to (B, H, T, K), True = attend (e.g. ``padding_mask``).
        ``causal``: query i sees keys up to its own position; with a cache the new queries are
        the last T of K positions. ``cache``: self-attention appends the new keys/values;
        cross-attention computes them from memory once and reuses them.
        Returns (output (B, T, D), weights (B, H, T, K) if need_weights else None).
        """
        b, t, _ = x.shape
        q, k, v = self._project(x, memory, cache)  # (B, H, T, Dh), (B, H, K, Dh) x 2
        kv_len = k.size(2)
        use_is_causal = causal and mask is None and kv_len == t and not need_weights
        if causal and not use_is_causal and t > 1:
            cm = causal_mask(t, x.device, kv_len)  # (T, K)
            mask = cm if mask is None else mask & cm  # (B, 1, T, K)
        weights = None
        if need_weights:
            out, weights = attention_reference(q, k, v, mask)  # (B, H, T, Dh)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                 is_causal=use_is_causal)  # (B, H, T, Dh)
        out = out.transpose(1, 2).reshape(b, t, self.d_model)  # (B, T, D)
        return self.out_proj(out), weights

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Xavier-uniform per projection (q, k, v separately), zero biases."""
        for lin in self.children():
            for chunk in lin.weight.split(self.d_model, dim=0):
                nn.init.xavier_uniform_(chunk)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)


# --------------------------------------------------------------------------- layers


class FeedForward(nn.Module):
    """Position-wise Linear-GELU-Linear."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # (B, T, F) -> (B, T, D)


class EncoderLayer(nn.Module):
    """Pre-LN block: x + SelfAttn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.ln_ff = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x (B, S, D), mask (B, 1, 1, S) -> (B, S, D), weights (B, H, S, S) or None."""
        a, w = self.attn(self.ln_attn(x), mask=mask, need_weights=need_weights)
        x = x + self.drop(a)
        x = x + self.drop(self.ff(self.ln_ff(x)))
        return x, w


class DecoderLayer(nn.Module):
    """Pre-LN block: causal self-attention, cross-attention to memory, feed-forward."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.ln_self = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads)
        self.ln_cross = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, cross=True)
        self.ln_ff = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        src_mask: Tensor | None,
        self_cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """x (B, T, D), memory (B, S, D), src_mask (B, 1, 1, S) -> (B, T, D),
        self weights (B, H, T, K) and cross weights (B, H, T, S) when need_weights."""
        a, w_self = self.self_attn(self.ln_self(x), causal=True, cache=self_cache,
                                   need_weights=need_weights)
        x = x + self.drop(a)
        a, w_cross = self.cross_attn(self.ln_cross(x), memory=memory, mask=src_mask,
                                     cache=cross_cache, need_weights=need_weights)
        x = x + self.drop(a)
        x = x + self.drop(self.ff(self.ln_ff(x)))
        return x, w_self, w_cross


# --------------------------------------------------------------------------- stacks


class Encoder(nn.Module):
    """A stack of encoder layers and a final LayerNorm (over already-embedded inputs)."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        self.ln_out = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, mask: Tensor | None, need_weights: bool = False,
                padded: bool | None = None) -> tuple[Tensor, list[Tensor]]:
        """x (B, S, D) -> (B, S, D) and, if need_weights, L tensors (B, H, S, S).
        ``padded``: whether ``mask`` masks anything, when known (:func:`sdpa_mask`)."""
        maps = []
        mask = sdpa_mask(mask, padded)  # None without padding: lets SDPA use flash
        for layer in self.layers:
            x, w = layer(x, mask, need_weights)
            if w is not None:
                maps.append(w)
        return self.ln_out(x), maps


class Decoder(nn.Module):
    """A stack of decoder layers and a final LayerNorm (over already-embedded inputs)."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        self.ln_out = nn.LayerNorm(d_model)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        src_mask: Tensor | None,
        cache: DecoderCache | None = None,
        need_weights: bool = False,
        padded: bool | None = None,
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """x (B, T, D) -> (B, T, D) and, if need_weights, L self maps (B, H, T, K) and
        L cross maps (B, H, T, S). ``padded``: whether ``src_mask`` masks anything, when known."""
        self_maps, cross_maps = [], []
        src_mask = sdpa_mask(src_mask, padded)  # None without source padding: lets SDPA use flash
        for i, layer in enumerate(self.layers):
            sc = cache.self_attn[i] if cache is not None else None
            cc = cache.cross_attn[i] if cache is not None else None
            x, ws, wc = layer(x, memory, src_mask, sc, cc, need_weights)
            if ws is not None and wc is not None:
                self_maps.append(ws)
                cross_maps.append(wc)
        return self.ln_out(x), self_maps, cross_maps
