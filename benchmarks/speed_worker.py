"""The worker side of ``benchmarks/speed.py``: one measurement in a fresh process.

``speed.py --worker JSON`` calls :func:`worker` with the spec the driver built and prints its
JSON-ready result. Everything heavy (torch, transformers, CTranslate2, attn) is imported inside
the functions, so importing this module costs nothing before :func:`preload` takes the memory
baseline. ``speed.py`` documents what is compared and how.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from speed_models import BOS, EOS, FIRST_REAL, PAD, build, marian_config

if TYPE_CHECKING:
    import torch
    from torch import nn

CT2_SIDES = ("ct2_float32", "ct2_int8")

Run = Callable[[], None]  # one timed iteration


def padded_ids(gen: torch.Generator, n: int, width: int, vocab: int, min_frac: float = 0.5) -> torch.Tensor:
    """(n, width) long ids of real tokens, right-padded to lengths in [min_frac*width, width]
    (the first row always full width, so the shape is fixed)."""
    import torch

    lo = max(1, int(width * min_frac))
    lens = torch.randint(lo, width + 1, (n,), generator=gen)
    lens[0] = width
    ids = torch.randint(FIRST_REAL, vocab, (n, width), generator=gen)
    keep = torch.arange(width)[None, :] < lens[:, None]
    return ids.masked_fill(~keep, PAD)


def make_batch(spec: dict) -> dict:
    """The fixed batch of one measurement, identical for both sides (same seed, same code)."""
    import torch

    gen = torch.Generator().manual_seed(spec["seed"])
    m, v = spec["measure"], spec["vocab"]
    if m == "train":
        src = padded_ids(gen, spec["train_batch"], spec["src_len"], v)
        body = padded_ids(gen, spec["train_batch"], spec["tgt_len"] - 1, v)  # (B, T-1)
        lens = body.ne(PAD).sum(1)
        pad_col = torch.full((body.size(0), 1), PAD, dtype=torch.long)
        tgt_in = torch.cat([torch.full_like(pad_col, BOS), body], 1)  # BOS + tokens (B, T)
        tgt_out = torch.cat([body, pad_col], 1)  # tokens + EOS (B, T)
        tgt_out[torch.arange(body.size(0)), lens] = EOS
        return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out, "units": int(tgt_out.ne(PAD).sum())}
    if m in ("greedy", "beam5"):
        src = padded_ids(gen, spec["dec_batch"], spec["dec_src_len"], v)
        return {"src": src, "units": spec["dec_batch"] * spec["dec_len"]}
    ids = padded_ids(gen, spec["cls_batch"], spec["cls_len"], v)
    labels = torch.randint(0, 2, (spec["cls_batch"],), generator=gen)
    return {"src": ids, "labels": labels, "units": spec["cls_batch"]}


# ------------------------------------------------------------------------------ timed steps


def autocast_of(spec: dict, device: torch.device) -> Callable[[], Any]:
    """A factory of the autocast context of the spec's precision (bf16, or disabled)."""
    import torch

    amp = torch.bfloat16 if spec["precision"] == "bf16" else None

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)
    return autocast


def decode_step(spec: dict, model: nn.Module, batch: dict, autocast: Callable[[], Any]) -> Run:
    """greedy/beam5: one batch decoded to exactly ``spec['dec_len']`` tokens by either side."""
    import torch

    model.eval()
    beam, n, src = (5 if spec["measure"] == "beam5" else 1), spec["dec_len"], batch["src"]
    if spec["side"] == "attn":
        from attn_cli.infer.decoding import DecodeConfig, decode

        dcfg = DecodeConfig(beam=beam, length_penalty=0.6, min_len=n, max_len_a=0.0, max_len_b=n)

        def run() -> None:
            with autocast():
                outs, _ = decode(model, src, dcfg)
            assert all(len(o) == n for o in outs), "attn did not generate exactly N tokens"
        return run
    from transformers import GenerationConfig

    gc = GenerationConfig(decoder_start_token_id=BOS, bos_token_id=BOS, eos_token_id=EOS,
                          pad_token_id=PAD, forced_eos_token_id=None, num_beams=beam,
                          do_sample=False, min_new_tokens=n, max_new_tokens=n,
                          length_penalty=0.6, early_stopping=False, use_cache=True)
    mask = src.ne(PAD).long()

    def run() -> None:
        with torch.inference_mode(), autocast():
            out = model.generate(input_ids=src, attention_mask=mask, generation_config=gc)
        assert out.shape == (src.size(0), n + 1), f"HF generated {tuple(out.shape)}"
    return run


def forward_call(spec: dict, model: nn.Module) -> Callable[..., torch.Tensor]:
    """The side's forward (compiled if asked) as ``call(src)`` or ``call(src, tgt_in)`` -> logits."""
    import torch

    side, m = spec["side"], spec["measure"]
    fwd = torch.compile(model) if spec["compile"] else model
    if side == "hf" and m != "train" and spec["hf_classifier"] == "bert":
        return lambda ids: fwd(input_ids=ids, attention_mask=ids.ne(PAD).long()).logits
    if side == "hf" and m == "train":
        return lambda src, tgt_in: fwd(input_ids=src, attention_mask=src.ne(PAD).long(),
                                       decoder_input_ids=tgt_in, use_cache=False).logits
    return fwd


def train_step(spec: dict, model: nn.Module, batch: dict, device: torch.device,
               call: Callable[..., torch.Tensor], autocast: Callable[[], Any]) -> Run:
    """train/cls_train: forward, summed cross-entropy over units, backward, clip, AdamW step."""
    import torch
    import torch.nn.functional as F

    from attn_cli.config import TrainConfig
    from attn_cli.train.optim import make_optimizer

    m = spec["measure"]
    model.train()
    opt = make_optimizer(model, TrainConfig(task="translate" if m == "train" else "sentiment"), device)
    params = [p for p in model.parameters() if p.requires_grad]

    def run() -> None:
        with autocast():
            if m == "train":
                logits, target, smooth, ignore = call(batch["src"], batch["tgt_in"]), batch["tgt_out"], 0.1, PAD
            else:
                logits, target, smooth, ignore = call(batch["src"]), batch["labels"], 0.0, -100
        loss = F.cross_entropy(logits.flatten(0, -2).float(), target.flatten(), ignore_index=ignore,
                               label_smoothing=smooth, reduction="sum") / batch["units"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return run


def step_fn(spec: dict, model: nn.Module, batch: dict, device: torch.device) -> Run:
    """A zero-argument callable doing one timed iteration of ``spec['measure']``."""
    import torch

    autocast = autocast_of(spec, device)
    if spec["measure"] in ("greedy", "beam5"):
        return decode_step(spec, model, batch, autocast)
    call = forward_call(spec, model)
    if spec["measure"] == "cls_infer":
        model.eval()

        def run() -> None:
            with torch.inference_mode(), autocast():
                call(batch["src"]).float().softmax(-1)
        return run
    return train_step(spec, model, batch, device, call, autocast)


def ct2_step(spec: dict, batch: dict, tmp: str) -> tuple[Run, int]:
    """The CTranslate2 side of greedy/beam5: attn's model of the same seed, exported and loaded."""
    import ctranslate2

    from attn_cli.infer.export import build_seq2seq_spec

    model, _, _ = build(dict(spec, side="attn"))
    pieces = ["<pad>", "<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(4, spec["vocab"])]
    ct2spec = build_seq2seq_spec(model.cfg, model.state_dict(), pieces, pieces)
    ct2spec.validate()
    ct2spec.optimize(quantization=spec["side"].removeprefix("ct2_"))
    ct2spec.save(tmp)
    device = "cuda" if spec["device"].startswith("cuda") else "cpu"
    translator = ctranslate2.Translator(tmp, device=device, intra_threads=spec["threads"])
    source = [[pieces[t] for t in row if t != PAD] for row in batch["src"].tolist()]
    beam, n = (5 if spec["measure"] == "beam5" else 1), spec["dec_len"]

    def run() -> None:
        out = translator.translate_batch(source, beam_size=beam, min_decoding_length=n,
                                         max_decoding_length=n, length_penalty=0.6, max_input_length=0)
        assert all(len(r.hypotheses[0]) == n for r in out), "CTranslate2 did not generate exactly N tokens"
    return run, sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# ------------------------------------------------------------------------------ one measurement


def preload(side: str) -> None:
    """Import everything a side needs before the memory baseline is taken (imports are not the
    model's memory)."""
    import torch
    import torch._dynamo  # noqa: F401  (transformers imports it; the optimizer would lazily)

    import attn_cli.config  # noqa: F401
    import attn_cli.train.trainer  # noqa: F401

    w = torch.nn.Parameter(torch.zeros(4))  # AdamW's first construction and step import more
    opt = torch.optim.AdamW([w])
    w.grad = torch.ones(4)
    opt.step()

    if side == "attn" or side in CT2_SIDES:
        import attn_cli.infer.decoding  # noqa: F401
        import attn_cli.model.transformer  # noqa: F401
        if side in CT2_SIDES:
            import ctranslate2  # noqa: F401

            import attn_cli.infer.export  # noqa: F401
        return
    import transformers
    from transformers import BertForSequenceClassification, GenerationConfig, MarianMTModel  # noqa: F401
    from transformers.models.marian.modeling_marian import MarianEncoder  # noqa: F401

    transformers.logging.set_verbosity_error()
    # generate() imports its machinery lazily: do it once on a throwaway 1-layer model.
    tiny = {"vocab": 16, "max_len": 8, "dims": {"d_model": 8, "n_enc_layers": 1, "n_dec_layers": 1,
                                                "n_heads": 1, "d_ff": 8}}
    ids = torch.full((1, 2), FIRST_REAL)
    gc = GenerationConfig(decoder_start_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, max_new_tokens=2)
    MarianMTModel(marian_config(tiny)).eval().generate(input_ids=ids, generation_config=gc)


def memory_now(cuda: bool) -> int:
    """Bytes: max RSS so far on CPU, ``max_memory_allocated`` on CUDA."""
    import torch

    if cuda:
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_baseline(cuda: bool) -> int:
    """Bytes before the model: allocated now (peak statistics reset) on CUDA, max RSS on CPU."""
    import torch

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_run(spec: dict, batch: dict, device: torch.device) -> tuple[Run, int, int]:
    """The side's timed iteration, its trainable and its frozen parameter counts."""
    if spec["side"] in CT2_SIDES:
        import atexit
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix="attn-ct2-")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the exported model, gone at exit
        run, params = ct2_step(spec, batch, tmp)
        return run, params, 0
    model, params, frozen = build(spec)
    model.to(device)
    return step_fn(spec, model, batch, device), params, frozen


def time_iterations(run: Run, spec: dict, cuda: bool) -> list[float]:
    """Seconds of each timed iteration, after the warm-up ones (at least 3 when compiling)."""
    import torch

    times = []
    warmup = max(spec["warmup"], 3) if spec["compile"] else spec["warmup"]  # compile happens here
    for i in range(warmup + spec["iters"]):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def worker(spec: dict) -> dict:
    """One measurement in this (fresh) process; returns a JSON-ready dict."""
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    preload(spec["side"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    batch = make_batch(spec)
    checksum = int(sum(int(t.sum()) for k, t in batch.items() if k != "units"))
    batch = {k: (t.to(device) if k != "units" else t) for k, t in batch.items()}
    base = memory_baseline(cuda)
    run, params, frozen = make_run(spec, batch, device)
    times = time_iterations(run, spec, cuda)
    peak = memory_now(cuda)
    if spec.get("profile"):  # after the timing and the memory reading, which it would distort
        profile(run, spec, cuda)
    med = statistics.median(times)
    return {"side": spec["side"], "preset": spec["preset"], "measure": spec["measure"],
            "variant": spec["variant"], "params": params, "frozen_params": frozen,
            "batch_checksum": checksum, "units": batch["units"], "times": times, "median_s": med,
            "throughput": batch["units"] / med, "peak_mem_mb": (peak - base) / 2**20,
            "peak_abs_mb": peak / 2**20, "threads": torch.get_num_threads()}


def profile(run: Run, spec: dict, cuda: bool) -> None:
    """Run ``spec['iters']`` more iterations under torch.profiler; print the top ops to stderr."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=acts) as prof:
        for _ in range(spec["iters"]):
            run()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"== profile: {spec['side']} {spec['preset']} {spec['variant']} {spec['measure']} "
          f"({spec['iters']} iterations)", file=sys.stderr)
    print(prof.key_averages().table(sort_by=key, row_limit=spec["profile"]), file=sys.stderr)
