"""Cross-entropy over a large vocabulary without the whole (N, V) logits matrix in memory.

A seq2seq step's logits are N target positions x V pieces: at 4,096 tokens and 8,000 pieces
that is 131 MB in fp32, and ``F.cross_entropy`` keeps the logits, their log-softmax and, in the
backward pass, two gradients of the same size alive at once (about 0.5 GB, more than the rest of
a ``tiny`` run together; 8 GB at 64k tokens and 32k pieces on a GPU). :func:`linear_cross_entropy`
fuses the output projection with the loss and walks the N rows in chunks of ``chunk`` rows:
each chunk's logits are made, turned into the loss and (when a gradient is wanted) into the
gradients of the hidden states and the projection matrix right away, and freed, so at most one
chunk of logits lives at a time. The backward pass then only scales the stored gradients. This
is the fused linear cross-entropy of e.g. Liger-Kernel and Apple's "Cut your losses"; it does the
same three matrix products as the unfused pair (logits, and the two gradients), so the step
costs the same.

Same definition as ``F.cross_entropy(h @ w.T, target, ignore_index, label_smoothing=s,
reduction="sum")``: per kept row, ``(1 - s) * nll + s * (logsumexp - mean(logits))``; its
gradient in the logits is ``softmax - (1 - s) * onehot(target) - s / V``.
"""

from __future__ import annotations

import torch
from torch import Tensor

# fp32 logits alive at once: 16 MiB on CPU (524 rows at V = 8,000; smaller chunks measured no
# slower there), 256 MiB on a GPU (fewer, larger products; 2,097 rows at V = 32,000)
CHUNK_BYTES = {"cpu": 16 << 20, "cuda": 256 << 20}


def chunk_rows(vocab: int, device: torch.device) -> int:
    """Rows of logits per chunk for a vocabulary of ``vocab`` pieces on ``device``."""
    return max(1, CHUNK_BYTES.get(device.type, CHUNK_BYTES["cuda"]) // (4 * vocab))


def _chunk_loss(logits: Tensor, target: Tensor, keep: Tensor, smoothing: float) -> tuple[Tensor, Tensor]:
    """Summed loss of one chunk, and its logsumexp (C,). logits (C, V) fp32, target (C,) valid ids."""
    lse = torch.logsumexp(logits, dim=-1)  # (C,)
    nll = lse - logits.gather(1, target[:, None]).squeeze(1)  # (C,)
    loss = nll if smoothing == 0.0 else (1.0 - smoothing) * nll + smoothing * (lse - logits.mean(-1))
    return (loss * keep).sum(), lse


class _LinearCrossEntropy(torch.autograd.Function):
    """Loss and both gradients in one chunked forward pass; backward scales the gradients."""

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, target: Tensor, ignore_index: int,
                smoothing: float, chunk: int) -> Tensor:
        n, v = h.shape[0], weight.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h)  # (N, D)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)  # (V, D)
        for start in range(0, n, chunk):
            hc, tc = h[start:start + chunk], target[start:start + chunk]  # (C, D), (C,)
            keep = tc.ne(ignore_index)  # (C,)
            safe = torch.where(keep, tc, torch.zeros_like(tc))  # (C,) ignored rows read piece 0
            logits = (hc @ weight.t()).float()  # (C, V)
            loss, lse = _chunk_loss(logits, safe, keep, smoothing)
            total += loss
            grad = logits.sub_(lse[:, None]).exp_()  # (C, V) softmax, in place of the logits
            if smoothing:
                grad.sub_(smoothing / v)
            rows = torch.arange(len(tc), device=h.device)
            grad[rows, safe] -= 1.0 - smoothing
            grad.mul_(keep[:, None])  # ignored rows have no gradient
            grad = grad.to(hc.dtype)
            grad_h[start:start + chunk] = grad @ weight.to(hc.dtype)  # (C, D)
            grad_w += (grad.t() @ hc).float()  # (V, D)
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out.to(grad_h.dtype), grad_w * grad_out.to(grad_w.dtype), None, None, None, None


@torch.compiler.disable  # a Python loop over a data-dependent number of chunks: left out of the graph
def linear_cross_entropy(h: Tensor, weight: Tensor, target: Tensor, *, ignore_index: int = -100,
                         smoothing: float = 0.0, chunk: int | None = None) -> Tensor:
    """Summed cross-entropy of ``h @ weight.T`` against ``target``, in chunks of ``chunk`` rows.

    h (N, D) hidden states, weight (V, D) output projection, target (N,) piece ids
    (``ignore_index`` rows count nothing). Returns a scalar fp32 tensor; differentiable in ``h``
    and ``weight`` when grad mode is on (the gradients are computed in the forward pass).
    ``chunk``: rows a chunk (None: :func:`chunk_rows`).
    """
    chunk = chunk or chunk_rows(weight.shape[0], h.device)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, target, ignore_index, smoothing, chunk)
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for start in range(0, h.shape[0], chunk):  # evaluation: the loss only
        tc = target[start:start + chunk]  # (C,)
        keep = tc.ne(ignore_index)
        logits = (h[start:start + chunk] @ weight.t()).float()  # (C, V)
        total += _chunk_loss(logits, torch.where(keep, tc, torch.zeros_like(tc)), keep, smoothing)[0]
    return total
