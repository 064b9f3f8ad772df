"""The device side of an optimizer step, without host syncs: the update (clipped, and skipped on
the device when the gradients are not finite), the moving average of --ema, and the totals the
steps add up to (mean loss, non-finite steps, tokens), kept on the device and read by the host
every READ_EVERY steps (or --log-every, or before an evaluation or a save).

Reading a device value (``.item()``, ``.tolist()``, ``bool()`` of a tensor) makes the host wait
for the GPU to finish everything queued; a loop that reads the loss every step cannot queue the
next step while the current one runs. nanoGPT reads the loss only every log interval and fairseq
avoids device-host transfers in the step; here the host learns of a non-finite step up to
READ_EVERY steps late. The update of that step is skipped all the same, on the device: fused
AdamW's ``found_inf`` argument (GradScaler's mechanism) leaves the weights, the moments and the
step count unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from attn_cli.train import distributed as dd

READ_EVERY = 10  # the host reads the step totals at least this often (steps)


class StepTotals:
    """Sums over the steps since the last :meth:`read`, on the device: the finite steps' mean
    losses, the non-finite steps and the finite steps' counted tokens (this process's share of
    the loss mean, and of the tokens, under DDP)."""

    def __init__(self, device: torch.device) -> None:
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sums = torch.zeros(3, dtype=dtype, device=device)  # (loss, non-finite steps, tokens)
        self.steps = 0  # steps added since the last read (known on the host)

    def add(self, mean_loss: Tensor, bad: Tensor, seen: float) -> None:
        """One step: ``mean_loss`` () this process's part of the step's mean loss, ``bad`` ()
        bool, True when the step was skipped, ``seen`` this process's count (host number)."""
        dtype, keep = self.sums.dtype, ~bad
        # (where, not a product: a skipped step's loss may be NaN)
        self.sums += torch.stack([torch.where(keep, mean_loss.to(dtype), 0.0), bad.to(dtype),
                                  keep.to(dtype) * seen])  # (3,)
        self.steps += 1

    def read(self, dist: dd.Dist) -> tuple[float, int, int, int]:
        """(sum of the finite steps' mean losses, non-finite steps, tokens of the finite steps,
        steps) since the last read, summed over processes; one host read (and one all-reduce
        under DDP). Resets the totals."""
        sums = dd.all_reduce_sum(self.sums.clone(), dist)
        loss, bad, seen = sums.tolist()
        steps = self.steps
        self.sums.zero_()
        self.steps = 0
        # every process skips the same steps (the all-reduced gradients decide), so ``bad`` is
        # counted world_size times
        return loss, round(bad / dist.world_size), round(seen), steps


def host_scalar(value: float, device: torch.device) -> Tensor:
    """A host number as a () float tensor on ``device``, copied without waiting (pinned on CUDA)."""
    t = torch.tensor(float(value))
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


def grad_norm(params: list[nn.Parameter], clip: float) -> Tensor:
    """The gradients' total 2-norm () as a device tensor, after clipping them to ``clip`` (0: no
    clipping); non-finite when a gradient is."""
    if clip > 0:
        return nn.utils.clip_grad_norm_(params, clip)
    return nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


def apply_update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 params: list[nn.Parameter], loss: Tensor, clip: float) -> Tensor:
    """Unscale, clip and step; returns ``bad`` () bool on the device: the step was skipped.

    fp16 (GradScaler enabled): the scaler skips steps with non-finite gradients itself (it reads
    them on the host: fp16 keeps that sync) and ``bad`` is a non-finite loss. Otherwise a
    non-finite gradient norm skips the update on the device (fused AdamW's ``found_inf``); an
    optimizer without it reads ``bad`` on the host."""
    if scaler.is_enabled():
        scaler.unscale_(optimizer)
        grad_norm(params, clip)
        scaler.step(optimizer)
        scaler.update()
        return ~torch.isfinite(loss)
    bad = ~torch.isfinite(grad_norm(params, clip))
    if optimizer.defaults.get("fused"):
        optimizer.grad_scale, optimizer.found_inf = None, bad.float()
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
    elif not bool(bad):
        optimizer.step()
    return bad


def update_ema(ema: AveragedModel, model: nn.Module, decay: float, first: bool) -> None:
    """--ema: move the average towards the weights (``first``: copy them), as AveragedModel with
    get_ema_multi_avg_fn does, but with the first-step test on the host (AveragedModel reads
    its step counter every step)."""
    averaged = [p.detach() for p in ema.module.parameters()]
    current = [p.detach() for p in model.parameters()]
    if first:
        torch._foreach_copy_(averaged, current)
    else:
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
    ema.n_averaged += 1  # (a CPU counter: no device read)


def rewind(scheduler: torch.optim.lr_scheduler.LambdaLR, steps: int) -> None:
    """Take back ``steps`` scheduler steps (steps found skipped after they were scheduled): the
    learning rate is again the one it would have been without them."""
    scheduler.last_epoch -= steps
    groups = scheduler.optimizer.param_groups
    for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in groups]
