"""One training step of the real Trainer on synthetic seq2seq batches: speed, FLOPs, MFU.

For each preset, mode (eager or ``torch.compile``) and token budget it builds
``attn_cli.train.trainer.Trainer`` on random token ids (no dataset files) and times
``Trainer.train_step`` (forward, chunked linear cross-entropy, backward, clipping, AdamW) on one
batch of that many padded tokens. What each table column is:

    target tok/s   non-pad target tokens (the Trainer's count) per second of a timed step
    TFLOP/step     FLOPs of one whole train_step, counted by torch.utils.flop_counter's
                   FlopCounterMode on the eager model (matrix products and attention only:
                   every Linear forward and backward, SDPA forward and backward, the output
                   projection's three products inside the loss); attention is counted in full
                   (no causal halving) and a fused SDPA backward includes its recompute of the
                   scores, as FlopCounterMode counts it
    TFLOP/s        TFLOP/step / seconds per step
    MFU %          TFLOP/s over the dense bf16 peak of the GPU, looked up by name
                   (``peak_flops``); empty on an unknown device or the CPU
    GPU busy %     union of the CUDA kernels' (and copies') intervals in torch.profiler over a
                   few steps / their wall time; n/a on the CPU
    peak GiB       torch.cuda.max_memory_allocated over the timed steps (model, AdamW state,
                   activations); empty on the CPU
    compile s      compiled mode: the first step's time less a steady step's (compilation,
                   including a recompile for a new batch shape); eager: empty

A batch of N padded tokens at --seq-len L holds N // L examples whose source lengths are drawn in
[7L/8, L] and target lengths in [3L/4, L - 1] (one example at the full length), close to a
length-sorted token-budget batch of the real plan. An out-of-memory step gives an "OOM" row.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from attn_cli.config import ModelConfig, TrainConfig, model_config_from_preset
from attn_cli.data.batching import Batch, collate_seq2seq
from attn_cli.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, TokenizerConfig, Tokenizers
from attn_cli.device import pick_device
from attn_cli.model.transformer import build_model
from attn_cli.train import distributed as dd
from attn_cli.train.trainer import Trainer

# Dense bf16 FLOP/s (no sparsity) from NVIDIA's datasheets; the first matching rule wins.
PEAKS: list[tuple[tuple[str, ...], float]] = [
    (("H100", "PCIE"), 756e12),
    (("H100",), 989e12),
    (("H200",), 989e12),
    (("A100",), 312e12),
]
COLUMNS = ["preset", "tokens/batch", "mode", "target tok/s", "TFLOP/step", "TFLOP/s", "MFU %",
           "GPU busy %", "peak GiB", "compile s"]


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU named like ``torch.cuda.get_device_name()``; None when
    the name is unknown (the CPU included)."""
    name = device_name.upper()
    for needles, peak in PEAKS:
        if all(n in name for n in needles):
            return peak
    return None


class Quiet:
    """A Trainer reporter that shows nothing."""

    def step(self, stats: dict) -> None: ...
    def evaluated(self, metrics: dict, is_best: bool) -> None: ...
    def note(self, message: str) -> None: ...


def synthetic_examples(tokens: int, seq_len: int, vocab: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """``tokens // seq_len`` random (source ids, target ids) pairs, padded cost <= seq_len each
    (see the module docstring); ids avoid the four special ids."""
    rng = random.Random(seed)
    n = max(1, tokens // seq_len)
    rows = []
    for i in range(n):
        s = seq_len if i == 0 else rng.randint(max(1, 7 * seq_len // 8), seq_len)
        t = seq_len - 1 if i == 0 else rng.randint(max(1, 3 * seq_len // 4), max(1, seq_len - 1))
        rows.append(([rng.randrange(4, vocab) for _ in range(s)], [rng.randrange(4, vocab) for _ in range(t)]))
    return rows


def synthetic_batch(tokens: int, seq_len: int, vocab: int, trainer: Trainer | None = None) -> Batch:
    """One seq2seq Batch (CPU) of ``tokens`` padded tokens per side, collated by ``trainer``'s
    task unit as its training batches are (widths rounded up on a GPU or under compile), or
    plainly without a trainer."""
    rows = synthetic_examples(tokens, seq_len, vocab)
    if trainer is not None:
        return trainer.unit.collate(rows, 0)
    return collate_seq2seq(rows, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)


def small_tokenizers() -> Tokenizers:
    """A real 300-piece SentencePiece model trained on random words (the Trainer's unit reads
    the tokenizers only to decode in validation, which is not run here)."""
    import sentencepiece as spm

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(400)]
    sentences = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(2000)]
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=proto, vocab_size=300, model_type="unigram",
        pad_id=PAD_ID, unk_id=1, bos_id=BOS_ID, eos_id=EOS_ID, byte_fallback=True, num_threads=1, minloglevel=2)
    tok = Tokenizer(proto.getvalue())
    return Tokenizers(src=tok, tgt=tok, config=TokenizerConfig(vocab_size=tok.vocab_size))


def build_trainer(model_cfg: ModelConfig, device: torch.device, *, precision: str = "auto", compile: bool = False,
                  tokens: int = 4096, toks: Tokenizers | None = None, run_dir: Path | None = None) -> Trainer:
    """The real Trainer (as ``attn train`` builds it, minus the data) for ``model_cfg``."""
    cfg = TrainConfig(task=model_cfg.task, max_tokens=tokens, device=str(device),
                      precision=precision, compile=compile, eval_every=10**9, log_every=10**9, warmup=10)
    torch.manual_seed(1)
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="attn-gpu-step-"))
    return Trainer(cfg, model_cfg, build_model(model_cfg), toks or small_tokenizers(), [], [], [], run_dir,
                   Quiet(), dd.Dist(), device)


def _cpu_sdpa_formulas() -> dict:
    """FlopCounterMode formulas for the CPU's fused SDPA kernels, which it does not know (the
    CUDA flash / efficient / cuDNN kernels it does): the same counts as for those."""
    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = (
            lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v))
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
            lambda g, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(g, q, k, v))
    return mapping


def count_step_flops(trainer: Trainer, batch: Batch) -> int:
    """FLOPs of one real ``train_step`` on ``batch`` (forward and backward, attention and the
    output projection included), counted by FlopCounterMode on the uncompiled model. The step
    is taken (it updates the weights)."""
    model = trainer.model
    trainer.model = trainer.raw_model  # compiled graphs hide their ops from the counter
    try:
        with FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_formulas()) as counter:
            trainer.train_step([(batch, 1.0)])
    finally:
        trainer.model = model
    return counter.get_total_flops()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(trainer: Trainer, batch: Batch, steps: int, each: bool = False) -> list[float]:
    """Seconds of ``steps`` train_steps on ``batch``: each one's (``each``: the device
    synchronized around every step), or the mean of all, run back to back as the training loop
    runs them (synchronized before the first and after the last only), repeated ``steps`` times."""
    if not each:
        _sync(trainer.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step([(batch, 1.0)])
        _sync(trainer.device)
        return [(time.perf_counter() - t0) / max(steps, 1)] * steps
    times = []
    for _ in range(steps):
        _sync(trainer.device)
        t0 = time.perf_counter()
        trainer.train_step([(batch, 1.0)])
        _sync(trainer.device)
        times.append(time.perf_counter() - t0)
    return times


def _union_us(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of (start, end) intervals."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def gpu_busy(trainer: Trainer, batch: Batch, steps: int) -> float | None:
    """Share of the wall time of ``steps`` profiled train_steps during which the GPU ran a kernel
    or a copy (union of their intervals; annotations left out); None on the CPU."""
    if trainer.device.type != "cuda" or steps <= 0:
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        _sync(trainer.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step([(batch, 1.0)])
        _sync(trainer.device)
        wall_us = (time.perf_counter() - t0) * 1e6
    spans = [(e.time_range.start, e.time_range.end) for e in prof.events()
             if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    return min(_union_us(spans) / wall_us, 1.0) if spans else None


def measure(trainer: Trainer, batch: Batch, args: argparse.Namespace, peak: float | None) -> dict:
    """One row: warm up (each step timed: the first holds compilation), count the FLOPs, time
    --steps steps back to back (their mean), profile --profile-steps."""
    device = trainer.device
    warm = timed_steps(trainer, batch, max(args.warmup, 1), each=True)
    flops = count_step_flops(trainer, batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = timed_steps(trainer, batch, max(args.steps, 1))[0]
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    busy = gpu_busy(trainer, batch, args.profile_steps)
    achieved = flops / step_s
    return {"target_tokens_per_s": batch.n_tokens / step_s, "tflop_per_step": flops / 1e12,
            "tflop_per_s": achieved / 1e12, "mfu": achieved / peak if peak else None,
            "gpu_busy": busy, "peak_gib": peak_gib, "step_s": step_s,
            "compile_s": max(warm[0] - step_s, 0.0) if trainer.cfg.compile else None,
            "examples": batch.n_examples, "src_len": batch.src.shape[1], "tgt_len": batch.tgt_in.shape[1],
            "pad_fraction": batch.pad_fraction, "target_tokens": batch.n_tokens}


def _is_oom(e: BaseException | None) -> bool:
    """An out-of-memory error, also when torch.compile wraps it in its own exception."""
    while e is not None:
        if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
            return True
        e = e.__cause__ or e.__context__
    return False


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_preset_mode(preset: str, mode: str, args: argparse.Namespace, device: torch.device,
                    peak: float | None, toks: Tokenizers, emit: Callable[[dict], None]) -> None:
    """``emit`` the rows of one preset and mode, one Trainer for all --tokens (a compiled model
    is compiled once and reused); an out-of-memory row reads OOM, a row past --deadline is
    skipped."""
    trainer = None
    for tokens in args.tokens:
        row = {"preset": preset, "mode": mode, "tokens": tokens}
        if args.deadline and time.perf_counter() - args.started > args.deadline:
            emit({**row, "status": "skipped (deadline)"})
            continue
        try:
            if trainer is None:
                mcfg = model_config_from_preset(preset, "translate", args.vocab, max_len=max(512, args.seq_len + 1))
                trainer = build_trainer(mcfg, device, precision=args.precision, compile=mode == "compiled",
                                        tokens=max(args.tokens), toks=toks)
            batch = synthetic_batch(tokens, args.seq_len, args.vocab, trainer)
            if device.type == "cuda":
                batch = batch.pin_memory()
            row = {**row, "status": "ok", **measure(trainer, batch, args, peak)}
        except Exception as e:  # noqa: BLE001 (only out-of-memory is caught; the rest is raised)
            if not _is_oom(e):
                raise
            row = {**row, "status": "OOM"}
            if trainer is not None:
                trainer.optimizer.zero_grad(set_to_none=True)
        _free(device)
        emit(row)
    del trainer
    _free(device)


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    """``value * scale`` in ``spec`` ("g3": three significant digits, no exponent); None: empty."""
    if value is None:
        return ""
    v = value * scale
    return (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}") if spec == "g3" else format(v, spec)


def format_row(r: dict) -> str:
    """One markdown table row (OOM and skipped rows say so in the speed column)."""
    if r.get("status") != "ok":
        cells = [r["preset"], str(r["tokens"]), r["mode"], r.get("status", "")] + [""] * (len(COLUMNS) - 4)
    else:
        busy = "n/a" if r["gpu_busy"] is None else _fmt(r["gpu_busy"], ".1f", 100)
        cells = [r["preset"], str(r["tokens"]), r["mode"], f"{r['target_tokens_per_s']:,.0f}",
                 _fmt(r["tflop_per_step"], "g3"), _fmt(r["tflop_per_s"], "g3"), _fmt(r["mfu"], ".1f", 100),
                 busy, _fmt(r["peak_gib"], ".1f"), _fmt(r["compile_s"], ".1f")]
    return "| " + " | ".join(cells) + " |"


def format_table(rows: list[dict]) -> str:
    """The markdown table of every row."""
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
    return "\n".join([head, *(format_row(r) for r in rows)])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    ap.add_argument("--presets", default=None,
                    help='space-separated presets (default "base big" on cuda, "tiny" on the cpu)')
    ap.add_argument("--tokens", default="16384 32768 65536",
                    help="space-separated padded tokens per batch (per side, like --max-tokens)")
    ap.add_argument("--modes", default="eager compiled", help="space-separated: eager and/or compiled")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per row, back to back (their mean is reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    ap.add_argument("--profile-steps", type=int, default=3, help="steps under torch.profiler (GPU busy %%)")
    ap.add_argument("--seq-len", type=int, default=32, help="longest source/target length of the examples")
    ap.add_argument("--vocab", type=int, default=8000, help="vocabulary size of the model (joint, tied)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                    help="the Trainer's --precision (auto: bf16 on cuda, fp32 on cpu)")
    ap.add_argument("--deadline", type=float, default=0.0,
                    help="seconds after the start past which no row starts (0: none)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here (rewritten after each)")
    args = ap.parse_args(argv)
    args.tokens = [int(t) for t in args.tokens.split()]
    args.modes = args.modes.split()
    if not set(args.modes) <= {"eager", "compiled"}:
        ap.error("--modes takes eager and/or compiled")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.started = time.perf_counter()
    device = pick_device(args.device)
    presets = (args.presets or ("base big" if device.type == "cuda" else "tiny")).split()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_flops(name)
    print(f"device: {name}; torch {torch.__version__}; " +
          (f"peak dense bf16 {peak / 1e12:.0f} TFLOP/s" if peak else "unknown peak (MFU left empty)"), flush=True)
    toks = small_tokenizers()
    rows: list[dict] = []

    def emit(row: dict) -> None:  # print the row at once and keep the JSON current
        rows.append(row)
        print(format_row(row), flush=True, file=sys.stderr)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"device": name, "peak_flops": peak, "torch": torch.__version__,
                                             "argv": sys.argv[1:], "rows": rows}, indent=1))

    for preset in presets:
        for mode in args.modes:
            run_preset_mode(preset, mode, args, device, peak, toks, emit)
    print(format_table(rows), flush=True)
    print(f"total {time.perf_counter() - args.started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
