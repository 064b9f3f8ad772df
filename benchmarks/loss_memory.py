"""Peak memory and step time of the training loss: the chunked linear cross-entropy
(attn_cli/model/losses.py, what training uses) against F.cross_entropy on the full logits.

One training step (forward + backward) of a Seq2Seq at --tokens target tokens (--batch rows)
and --vocab pieces. Memory: each side runs in its own fresh process, which reports its peak
memory growth over the step (CPU: max RSS from getrusage; CUDA: max_memory_allocated). Time:
both sides in one process, alternating for --rounds rounds (noise hits both alike).

    python benchmarks/loss_memory.py                       # tiny, 4,096 tokens, 8,000 pieces
    python benchmarks/loss_memory.py --preset small --device cuda --tokens 65536 --vocab 32000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from attn_cli.config import model_config_from_preset
from attn_cli.model.transformer import Seq2Seq


def setup(args) -> tuple[Seq2Seq, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    cfg = model_config_from_preset(args.preset, task="translate", vocab_size=args.vocab, max_len=256)
    model = Seq2Seq(cfg).to(args.device)
    rows, length = args.batch, args.tokens // args.batch
    src = torch.randint(4, args.vocab, (rows, length), device=args.device)
    tgt = torch.randint(4, args.vocab, (rows, length + 1), device=args.device)
    return model, (src, tgt[:, :-1], tgt[:, 1:])


def step(model: Seq2Seq, batch: tuple[torch.Tensor, ...], side: str) -> None:
    src, tgt_in, tgt_out = batch
    if side == "chunked":
        loss = model(src, tgt_in, target=tgt_out, smoothing=0.1)
    else:
        loss = F.cross_entropy(model(src, tgt_in).flatten(0, 1).float(), tgt_out.flatten(),
                               ignore_index=model.cfg.pad_id, label_smoothing=0.1, reduction="sum")
    loss.backward()
    model.zero_grad(set_to_none=False)


def peak(args) -> float:
    """This process's peak memory growth (MB) over one step of ``args.side``."""
    model, batch = setup(args)
    if args.device == "cuda":
        step(model, batch, args.side)  # gradients and allocator warm
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(model, batch, args.side)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    # CPU: the first step's growth of max RSS over the RSS before it (the model's gradients, a
    # few MB, included); ru_maxrss only rises, so a second step could not be measured this way
    before = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 1024
    step(model, batch, args.side)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--tokens", type=int, default=4096, help="target tokens a step (as --max-tokens)")
    ap.add_argument("--batch", type=int, default=128, help="rows a step")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--side", help=argparse.SUPPRESS)  # internal: one side's peak, in a child
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.side:
        print(json.dumps({"peak_mb": round(peak(args), 1)}))
        return
    sides = ("chunked", "full logits")
    mem = {}
    for side in sides:
        out = subprocess.run([sys.executable, *sys.argv, "--side", side], check=True,
                             capture_output=True, text=True).stdout
        mem[side] = json.loads(out.strip().splitlines()[-1])["peak_mb"]
    model, batch = setup(args)
    times = {s: [] for s in sides}
    for r in range(args.rounds + 1):
        for side in (sides if r % 2 else sides[::-1]):
            if args.device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            step(model, batch, side)
            if args.device == "cuda":
                torch.cuda.synchronize()
            if r:  # round 0 warms both
                times[side].append(time.perf_counter() - t)
    med = {s: sorted(v)[len(v) // 2] * 1000 for s, v in times.items()}
    print(json.dumps({"preset": args.preset, "tokens": args.tokens, "vocab": args.vocab, "device": args.device,
                      "peak_step_mb": mem, "median_step_ms": {s: round(v, 1) for s, v in med.items()},
                      "time_ratio_chunked_to_full": round(med["chunked"] / med["full logits"], 3)}))


if __name__ == "__main__":
    main()
