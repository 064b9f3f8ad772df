"""Seeing attention: token importance for the classifier, source-target alignment for seq2seq.

Computation (tensors in, tensors out) and rendering (rich renderables, a PNG) live here; the
CLI decides what to print. Shape legend as in ``model/layers.py``: L layers, B batch, H heads,
S source/input positions, T output positions.

Token importance is *attention rollout* (Abnar & Zuidema, 2020, "Quantifying Attention Flow in
Transformers"). Raw attention of the last layer says how much each position mixes in the
*current* representations of the others, but after the first layer those representations are
already mixtures of every token, and the residual connection carries each token's own
representation forward next to what attention adds. Rollout accounts for both: per layer it
averages the heads, adds the identity for the residual stream (``0.5 * A + 0.5 * I`` after row
renormalisation), and multiplies the layers, so ``rollout[i, j]`` estimates how much input
token j flows into position i at the top of the encoder. The classifier pools by the mean over
real tokens, so the importance of token j is the mean of ``rollout[i, j]`` over real queries i.

Limits: rollout follows attention only. It ignores the feed-forward blocks, the layer norms,
the value vectors and the classification head, so it says where information *can* flow, not
which tokens pushed the prediction towards a label; it is not a gradient-based attribution
(integrated gradients, gradient x input) and gives the same picture whatever class is
predicted. Read it as an aid to intuition, not as proof.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch
from rich.table import Table
from rich.text import Text
from torch import Tensor, nn

from attn_cli.errors import AttnError
from attn_cli.model.transformer import Classifier, Seq2Seq

SPACE_PIECE = "\u2581"  # SentencePiece's word-boundary marker "▁"
BLOCKS = " \u2591\u2592\u2593\u2588"  # " ░▒▓█": five shades for terminals without colour

# --------------------------------------------------------------------------- computation


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run with dropout off and no autograd, then restore the model's train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def rollout_matrix(attn: Tensor, mask: Tensor) -> Tensor:
    """Attention rollout (B, S, S) from attention weights attn (L, B, H, S, S).

    ``mask`` (B, S) bool is True at real tokens. Row i says how much of each input token flows
    into position i after the last layer; real rows sum to 1 over real columns, pad columns
    are 0 and pad rows are the identity (they never feed real rows).
    """
    if attn.dim() != 5:
        raise ValueError(f"attn must be (L, B, H, S, S), got shape {tuple(attn.shape)}")
    n_layers, b, _, s, _ = attn.shape
    keep = mask.to(torch.float32)  # (B, S)
    pair = keep[:, :, None] * keep[:, None, :]  # (B, S, S): real query and real key
    eye = torch.eye(s, dtype=torch.float32, device=attn.device).expand(b, s, s)  # (B, S, S)
    result = eye.clone()
    for layer in range(n_layers):
        a = attn[layer].float().mean(dim=1) * pair  # (B, S, S) heads averaged, pads removed
        a = a + eye  # the residual stream carries each token forward
        a = a / a.sum(dim=-1, keepdim=True)  # rows stochastic again
        result = a @ result  # (B, S, S): this layer mixes the previous layers' mixtures
    return result


def rollout(attn: Tensor, mask: Tensor, shares: Tensor | None = None) -> Tensor:
    """Token importance (B, S): the ``rollout_matrix`` rows of the real query positions,
    weighted by ``shares`` (B, S), each position's share of the pooled vector (default: equal
    shares, i.e. mean pooling). Real tokens sum to 1 per row; pads (and all-pad rows) are 0."""
    keep = mask.to(torch.float32)  # (B, S)
    if shares is None:
        shares = keep / keep.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, S): mean over real
    flow = rollout_matrix(attn, mask)  # (B, S, S)
    pooled = (flow * (shares * keep)[:, :, None]).sum(dim=1)  # (B, S): weighted sum over queries
    return pooled * keep  # pad columns are 0 already; this makes it exact


def token_importance(model: Classifier, ids: Tensor) -> Tensor:
    """Attention-rollout importance (B, S) of each input token for the pooled representation.

    ids (S,), (1, S) or (B, S). Runs in eval mode without gradients and restores the model's
    mode. Each row sums to 1 over real tokens; pad positions are 0.
    """
    if ids.dim() == 1:
        ids = ids[None, :]  # (1, S)
    with _eval_mode(model):
        attn = model.attention_maps(ids)  # (L, B, H, S, S)
    return rollout(attn, ids != model.cfg.pad_id)  # (B, S): mean pooling gives equal shares


def cross_alignment(model: Seq2Seq, src_ids: Tensor, out_ids: Tensor,
                    layer: int | None = None) -> Tensor:
    """Source-target alignment (T, S) from the decoder's cross-attention.

    ``out_ids`` (T,) or (1, T) are the output tokens as decoding returns them (no BOS; they may
    end with EOS). The decoder is teacher-forced with BOS + out_ids[:-1], so row t is the
    cross-attention in use while the model predicted output token t.

    By default the weights are averaged over all decoder layers and heads: single heads and the
    last layer of small models are often diffuse or specialised, and the average is a steadier
    picture. ``layer`` picks one layer instead (heads still averaged; -1 = the last layer).
    Each row sums to 1 over source positions (pad sources get 0).
    """
    if src_ids.dim() == 1:
        src_ids = src_ids[None, :]  # (1, S)
    if out_ids.dim() == 1:
        out_ids = out_ids[None, :]  # (1, T)
    if src_ids.size(0) != 1 or out_ids.size(0) != 1:
        raise ValueError("cross_alignment explains one example: src_ids (1, S), out_ids (1, T)")
    if out_ids.size(1) == 0:
        raise ValueError("out_ids is empty: there is nothing to align")
    bos = torch.full((1, 1), model.cfg.bos_id, dtype=out_ids.dtype, device=out_ids.device)
    tgt_in = torch.cat([bos, out_ids[:, :-1]], dim=1)  # (1, T): row t predicts out_ids[t]
    with _eval_mode(model):
        cross = model.cross_attention(src_ids, tgt_in).float()  # (L, 1, H, T, S)
    cross = cross[:, 0]  # (L, H, T, S)
    if layer is not None:
        cross = cross[layer][None]  # (1, H, T, S)
    return cross.mean(dim=(0, 1))  # (T, S)


# --------------------------------------------------------------------------- rendering


def _shade(weight: float, solid: bool = False) -> str:
    """A rich style with a white-to-red background for weight in [0, 1]: readable text on it,
    or (``solid``) a foreground of the same colour, so block characters fill the cell."""
    w = min(max(weight, 0.0), 1.0)
    colour = f"rgb(255,{int(255 - 200 * w)},{int(255 - 215 * w)})"
    fg = colour if solid else ("white" if w > 0.6 else "black")
    return f"{fg} on {colour}"


def _scaled(weights: Sequence[float]) -> list[float]:
    """Weights divided by their maximum (all zeros stay zeros)."""
    values = [float(w) for w in weights]
    top = max(values, default=0.0)
    return [v / top if top > 0 else 0.0 for v in values]


def _display(piece: str) -> str:
    """A piece without its word-boundary marker (a bare marker stays visible)."""
    text = piece.replace(SPACE_PIECE, "")
    return text if text else SPACE_PIECE


def render_importance(pieces: list[str], weights: list[float]) -> Text:
    """The sentence with each piece on a background shaded by its weight (scaled to the max).

    SentencePiece's "▁" becomes an unshaded space, so the plain text is the detokenized
    sentence (no leading space).
    """
    if len(pieces) != len(weights):
        raise ValueError(f"{len(pieces)} pieces but {len(weights)} weights")
    text = Text()
    for i, (piece, w) in enumerate(zip(pieces, _scaled(weights), strict=True)):
        surface = piece.replace(SPACE_PIECE, " ")
        if i == 0:
            surface = surface.lstrip(" ")
        body = surface.lstrip(" ")
        text.append(surface[: len(surface) - len(body)])  # the word boundary, unshaded
        if body:
            text.append(body, style=_shade(w))
    return text


def merge_words(pieces: list[str], weights: list[float]) -> list[tuple[str, float]]:
    """Join pieces into words (a word starts at "▁"), summing their weights."""
    words: list[tuple[str, float]] = []
    for piece, w in zip(pieces, weights, strict=True):
        if piece.startswith(SPACE_PIECE) or not words:
            words.append((piece, float(w)))
        else:
            prev, pw = words[-1]
            words[-1] = (prev + piece, pw + float(w))
    merged = [(word.replace(SPACE_PIECE, " ").strip(), w) for word, w in words]
    return [(word, w) for word, w in merged if word]


def top_tokens(pieces: list[str], weights: list[float], k: int = 5,
               words: bool = True) -> list[tuple[str, float]]:
    """The ``k`` most important words (or pieces, with ``words=False``), largest first."""
    if len(pieces) != len(weights):
        raise ValueError(f"{len(pieces)} pieces but {len(weights)} weights")
    items = (merge_words(pieces, weights) if words
             else [(_display(p), float(w)) for p, w in zip(pieces, weights, strict=True)])
    return sorted(items, key=lambda item: -item[1])[:k]  # stable: ties keep sentence order


def _as_matrix(src_pieces: list[str], out_pieces: list[str], matrix: Tensor | Sequence
               ) -> Tensor:
    m = torch.as_tensor(matrix, dtype=torch.float32).detach().cpu()  # (T, S)
    if tuple(m.shape) != (len(out_pieces), len(src_pieces)):
        raise ValueError(f"matrix shape {tuple(m.shape)} does not match "
                         f"{len(out_pieces)} output x {len(src_pieces)} source pieces")
    return m


def render_alignment(src_pieces: list[str], out_pieces: list[str],
                     matrix: Tensor | Sequence) -> Table:
    """A heatmap table: one row per output piece, one column per source piece.

    Each cell is a shaded background (with colour) and a block character " ░▒▓█" (without),
    both scaled to the largest weight in the matrix.
    """
    m = _as_matrix(src_pieces, out_pieces, matrix)  # (T, S)
    top = float(m.max()) if m.numel() else 0.0
    table = Table(show_lines=False, pad_edge=False, box=None, padding=(0, 1))
    table.add_column("", justify="right", no_wrap=True)
    for piece in src_pieces:
        table.add_column(_display(piece), justify="center", no_wrap=True)
    for t, piece in enumerate(out_pieces):
        cells = []
        for w in m[t].tolist():
            level = w / top if top > 0 else 0.0
            block = BLOCKS[min(int(level * (len(BLOCKS) - 1) + 0.5), len(BLOCKS) - 1)]
            cells.append(Text(block * 2, style=_shade(level, solid=True)))
        table.add_row(_display(piece), *cells)
    return table


def plot_alignment(src_pieces: list[str], out_pieces: list[str], matrix: Tensor | Sequence,
                   path: str | os.PathLike) -> None:
    """Save the alignment heatmap (rows = output, columns = source) as a PNG at ``path``."""
    m = _as_matrix(src_pieces, out_pieces, matrix)  # (T, S)
    try:  # lazily: matplotlib is an optional extra; Agg needs no display
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise AttnError("--plot needs matplotlib", "pip install 'attn[plot]'") from None
    t, s = m.shape
    fig = Figure(figsize=(max(4.0, 0.45 * s + 2.0), max(3.0, 0.4 * t + 1.5)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(m.numpy(), cmap="Reds", vmin=0.0, aspect="auto")
    ax.set_xticks(range(s), [_display(p) for p in src_pieces], rotation=60, ha="right")
    ax.set_yticks(range(t), [_display(p) for p in out_pieces])
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:  # atomic: a reader never sees half a PNG
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
