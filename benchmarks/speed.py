#!/usr/bin/env python
"""Speed of attn against Hugging Face transformers: same shapes, same batches, same machine.

    python benchmarks/speed.py                                  # CPU fp32, presets small and base
    python benchmarks/speed.py --quick                          # a smoke test with tiny sizes
    python benchmarks/speed.py --device cuda --compile both     # bf16, eager and torch.compile

What is compared (each side randomly initialised from the same seed):

* seq2seq (train, greedy, beam5): attn's ``Seq2Seq`` from ``model_config_from_preset`` against a
  ``MarianMTModel`` built from a ``MarianConfig`` of identical shape: d_model, encoder/decoder
  layers, heads, FFN width, joint vocabulary shared by encoder, decoder and output projection,
  the same positions (sinusoidal, ``max_len``), embeddings scaled by sqrt(d_model), dropout 0.1
  on embeddings and residual branches, no attention or activation dropout, exact (erf) GELU, and
  SDPA attention on both sides.
* sentiment (cls_infer, cls_train): attn's ``Classifier`` against Marian's *encoder* with the
  same head attn uses (masked mean pooling, Linear-tanh-dropout-Linear). The Marian encoder is
  the same block code as the seq2seq comparison, with sinusoidal positions like attn, so only
  the implementation differs. ``--hf-classifier bert`` uses ``BertForSequenceClassification``
  instead (learned positions, token types, an embedding LayerNorm, a [CLS] pooler), which a
  user is more likely to reach for but which is not quite the same shape.

Differences that remain, by design of the two libraries (the parameter check accounts for them
exactly and fails loudly on anything else):

* attn is pre-LN with a final LayerNorm per stack; Marian is post-LN (no ``normalize_before``
  option in ``MarianConfig``) with no final LayerNorm: the same number of LayerNorms per layer,
  attn has one more per stack (+2D parameters each).
* attn has no q/k/v biases and fuses q/k/v (self) or k/v (cross) into one matrix product;
  Marian has separate biased q, k, v projections (+3D parameters per attention module).
* Marian adds ``final_logits_bias`` (a (1, V) buffer, not a parameter) to every logit and keeps
  its sinusoidal positions as frozen ``nn.Embedding`` weights (excluded from the counts).

The training step is the same code for both sides: forward (autocast bf16 on CUDA), summed
cross-entropy with label smoothing 0.1 over non-pad targets divided by their number, backward,
clip to norm 1, AdamW from ``attn_cli.train.optim.make_optimizer`` (betas 0.9/0.98, weight decay on
matrices, fused on CUDA), ``zero_grad(set_to_none=True)``. The decoder gets no padding mask on
either side (right padding under a causal mask needs none; its loss is ignored).
Decoding forces exactly N output tokens per sentence on both sides: attn
``DecodeConfig(min_len=N, max_len_a=0, max_len_b=N)``, HF ``min_new_tokens=max_new_tokens=N``
(EOS blocked until then; ``forced_eos_token_id`` off), so both do the same number of steps.

With ``--ct2``, greedy and beam5 also run two CTranslate2 sides: the same attn ``Seq2Seq``
(same seed, same weights) written by ``attn_cli.infer.export.build_seq2seq_spec`` as float32 and as
int8, decoded by ``ctranslate2.Translator.translate_batch`` on the same source ids with exactly N
tokens (``min_decoding_length = max_decoding_length = N``, length penalty 0.6), with
``intra_threads`` = ``--threads`` (0: CTranslate2's default).

Every measurement runs in a fresh subprocess (``--worker``), so peak memory is that process's
own: ``getrusage`` max RSS growth after imports and batch creation on CPU,
``torch.cuda.max_memory_allocated`` on CUDA. Measurements are interleaved (attn, HF, then HF,
attn in the next round, ...) and the reported time is the median over rounds of each worker's
median iteration, so machine noise falls on both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

PAD, BOS, EOS, FIRST_REAL = 0, 2, 3, 4  # attn's special ids (attn_cli.data.tokenizer), used by both
MEASURES = ("train", "greedy", "beam5", "cls_infer", "cls_train")
UNITS = {"train": "tgt tok/s", "greedy": "gen tok/s", "beam5": "gen tok/s",
         "cls_infer": "ex/s", "cls_train": "ex/s"}
# Issue 5 targets (attn / HF) for the small preset on CPU.
TARGETS = {("small", "cpu", "train"): 1.2, ("small", "cpu", "greedy"): 2.0,
           ("small", "cpu", "beam5"): 2.0}
NOT_COMPILED = ("greedy", "beam5")  # generation loops run eager on both sides

FULL = dict(train_batch=128, src_len=32, tgt_len=32, dec_batch=32, dec_src_len=24, dec_len=32,
            cls_batch=64, cls_len=64, iters=5, warmup=1, rounds=3)
QUICK = dict(train_batch=8, src_len=12, tgt_len=12, dec_batch=4, dec_src_len=10, dec_len=6,
             cls_batch=8, cls_len=16, iters=2, warmup=1, rounds=1)


# =========================================================================== worker side


def padded_ids(gen, n: int, width: int, vocab: int, min_frac: float = 0.5):
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


def marian_config(spec: dict):
    from transformers import MarianConfig

    p = spec["dims"]
    cfg = MarianConfig(
        vocab_size=spec["vocab"], d_model=p["d_model"], encoder_layers=p["n_enc_layers"],
        decoder_layers=p["n_dec_layers"], encoder_attention_heads=p["n_heads"],
        decoder_attention_heads=p["n_heads"], encoder_ffn_dim=p["d_ff"], decoder_ffn_dim=p["d_ff"],
        max_position_embeddings=spec["max_len"], dropout=0.1, attention_dropout=0.0,
        activation_dropout=0.0, activation_function="gelu", scale_embedding=True,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=BOS,
        forced_eos_token_id=None, share_encoder_decoder_embeddings=True, tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    return cfg


def build(spec: dict):
    """The model of one side (train mode), its trainable parameter count, and a note."""
    import torch
    from torch import nn

    torch.manual_seed(spec["seed"])
    seq2seq = spec["measure"] in ("train", "greedy", "beam5")
    if spec["side"] == "attn":
        from attn_cli.config import model_config_from_preset
        from attn_cli.model.transformer import build_model

        task = "translate" if seq2seq else "sentiment"
        cfg = model_config_from_preset(spec["preset"], task, spec["vocab"],
                                       num_labels=0 if seq2seq else 2, max_len=spec["max_len"])
        model = build_model(cfg)
    elif seq2seq:
        from transformers import MarianMTModel

        model = MarianMTModel(marian_config(spec))
    elif spec["hf_classifier"] == "bert":
        from transformers import BertConfig, BertForSequenceClassification

        p = spec["dims"]
        cfg = BertConfig(vocab_size=spec["vocab"], hidden_size=p["d_model"],
                         num_hidden_layers=p["n_enc_layers"], num_attention_heads=p["n_heads"],
                         intermediate_size=p["d_ff"], hidden_act="gelu", hidden_dropout_prob=0.1,
                         attention_probs_dropout_prob=0.0, max_position_embeddings=spec["max_len"],
                         type_vocab_size=1, num_labels=2, pad_token_id=PAD)
        cfg._attn_implementation = "sdpa"
        model = BertForSequenceClassification(cfg)
    else:
        from transformers.models.marian.modeling_marian import MarianEncoder

        class MarianEncoderClassifier(nn.Module):
            """Marian's encoder with attn's head: masked mean pooling, Linear-tanh-Linear."""

            def __init__(self, cfg) -> None:
                super().__init__()
                d = cfg.d_model
                self.encoder = MarianEncoder(cfg)
                self.head = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Dropout(cfg.dropout),
                                          nn.Linear(d, 2))

            def forward(self, ids):
                mask = ids.ne(PAD)  # (B, S)
                h = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
                keep = mask[..., None].to(h.dtype)  # (B, S, 1)
                return self.head((h * keep).sum(1) / keep.sum(1).clamp(min=1.0))  # (B, C)

        model = MarianEncoderClassifier(marian_config(spec))
    unique = {id(p): p for p in model.parameters()}.values()
    return model, sum(p.numel() for p in unique if p.requires_grad), \
        sum(p.numel() for p in unique if not p.requires_grad)


def step_fn(spec: dict, model, batch: dict, device):
    """A zero-argument callable doing one timed iteration of ``spec['measure']``."""
    import torch
    import torch.nn.functional as F

    side, m = spec["side"], spec["measure"]
    amp = torch.bfloat16 if spec["precision"] == "bf16" else None

    def autocast():
        return torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)

    if m in ("greedy", "beam5"):
        model.eval()
        beam, n, src = (5 if m == "beam5" else 1), spec["dec_len"], batch["src"]
        if side == "attn":
            from attn_cli.infer.decoding import DecodeConfig, decode

            dcfg = DecodeConfig(beam=beam, length_penalty=0.6, min_len=n, max_len_a=0.0, max_len_b=n)

            def run():
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

        def run():
            with torch.inference_mode(), autocast():
                out = model.generate(input_ids=src, attention_mask=mask, generation_config=gc)
            assert out.shape == (src.size(0), n + 1), f"HF generated {tuple(out.shape)}"
        return run

    fwd = torch.compile(model) if spec["compile"] else model
    if side == "hf" and m != "train" and spec["hf_classifier"] == "bert":
        call = lambda ids: fwd(input_ids=ids, attention_mask=ids.ne(PAD).long()).logits  # noqa: E731
    elif side == "hf" and m == "train":
        call = lambda src, tgt_in: fwd(input_ids=src, attention_mask=src.ne(PAD).long(),  # noqa: E731
                                       decoder_input_ids=tgt_in, use_cache=False).logits
    else:
        call = fwd

    if m == "cls_infer":
        model.eval()

        def run():
            with torch.inference_mode(), autocast():
                call(batch["src"]).float().softmax(-1)
        return run

    from attn_cli.config import TrainConfig
    from attn_cli.train.optim import make_optimizer

    model.train()
    opt = make_optimizer(model, TrainConfig(task="translate" if m == "train" else "sentiment"), device)
    params = [p for p in model.parameters() if p.requires_grad]

    def run():
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


CT2_SIDES = ("ct2_float32", "ct2_int8")


def ct2_step(spec: dict, batch: dict, tmp: str):
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

    def run():
        out = translator.translate_batch(source, beam_size=beam, min_decoding_length=n,
                                         max_decoding_length=n, length_penalty=0.6, max_input_length=0)
        assert all(len(r.hypotheses[0]) == n for r in out), "CTranslate2 did not generate exactly N tokens"
    return run, sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


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
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if spec["side"] in CT2_SIDES:
        import atexit
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix="attn-ct2-")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the exported model, gone at exit
        run, params = ct2_step(spec, batch, tmp)
        frozen = 0
    else:
        model, params, frozen = build(spec)
        model.to(device)
        run = step_fn(spec, model, batch, device)
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
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if spec.get("profile"):  # after the timing and the memory reading, which it would distort
        profile(run, spec, cuda)
    med = statistics.median(times)
    return {"side": spec["side"], "preset": spec["preset"], "measure": spec["measure"],
            "variant": spec["variant"], "params": params, "frozen_params": frozen,
            "batch_checksum": checksum, "units": batch["units"], "times": times, "median_s": med,
            "throughput": batch["units"] / med, "peak_mem_mb": (peak - base) / 2**20,
            "peak_abs_mb": peak / 2**20, "threads": torch.get_num_threads()}


def profile(run, spec: dict, cuda: bool) -> None:
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


# =========================================================================== driver side


def expected_param_diff(dims: dict, measure: str, hf_classifier: str, max_len: int) -> int:
    """HF minus attn trainable parameters implied by the stated structural differences."""
    d, le, ld = dims["d_model"], dims["n_enc_layers"], dims["n_dec_layers"]
    if measure in ("train", "greedy", "beam5"):
        # q/k/v biases: one self-attention per encoder layer, self + cross per decoder layer;
        # attn's final LayerNorm after each stack.
        return 3 * d * (le + 2 * ld) - 2 * (2 * d)
    diff = 3 * d * le - 2 * d  # q/k/v biases; attn's final encoder LayerNorm
    if hf_classifier == "bert":  # learned positions, one token type, the embedding LayerNorm
        diff += max_len * d + d + 2 * d
    return diff


def variants(args) -> list[dict]:
    if args.device == "cpu":
        return [{"name": "cpu fp32", "precision": args.precision or "fp32", "compile": False}]
    prec = args.precision or "bf16"
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    return [{"name": f"cuda {prec}" + (" compile" if c else ""), "precision": prec, "compile": c}
            for c in modes]


def run_worker(spec: dict, nice: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if spec.get("profile") and proc.returncode == 0:
        print("\n".join(ln for ln in proc.stderr.splitlines() if "Warning" not in ln), file=sys.stderr)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"worker {spec['side']} {spec['preset']} {spec['measure']} failed:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        text += f"; {torch.cuda.get_device_name(0)}"
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default=None, help="comma-separated attn presets [small,base]")
    ap.add_argument("--measures", default=",".join(MEASURES), help=f"subset of {','.join(MEASURES)}")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto [cpu]")
    ap.add_argument("--precision", default=None, help="fp32 or bf16 [fp32 on CPU, bf16 on CUDA]")
    ap.add_argument("--compile", default="both", choices=("off", "on", "both"),
                    help="CUDA only: torch.compile for train and classification [both]")
    ap.add_argument("--iters", type=int, help=f"timed iterations per worker [{FULL['iters']}]")
    ap.add_argument("--warmup", type=int, help=f"untimed iterations first [{FULL['warmup']}]")
    ap.add_argument("--rounds", type=int, help=f"interleaved repeats, median taken [{FULL['rounds']}]")
    ap.add_argument("--batch", type=int, help=f"decoding batch (sentences) [{FULL['dec_batch']}]")
    ap.add_argument("--dec-len", type=int, help=f"forced output tokens N [{FULL['dec_len']}]")
    ap.add_argument("--train-batch", type=int, help=f"training sentences per batch [{FULL['train_batch']}]")
    ap.add_argument("--seq-len", type=int, help=f"training source/target width [{FULL['src_len']}]")
    ap.add_argument("--cls-batch", type=int, help=f"sentiment batch [{FULL['cls_batch']}]")
    ap.add_argument("--cls-len", type=int, help=f"sentiment width [{FULL['cls_len']}]")
    ap.add_argument("--vocab", type=int, default=8000, help="joint vocabulary size [8000]")
    ap.add_argument("--max-len", type=int, default=256, help="positions per side, both models [256]")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per worker [0 = torch default]")
    ap.add_argument("--nice", type=int, default=0, help="run workers under nice -n N [0]")
    ap.add_argument("--hf-classifier", default="marian", choices=("marian", "bert"),
                    help="HF sentiment model: Marian encoder + attn's head, or BERT [marian]")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 round: a smoke test")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also profile each worker (torch.profiler, top N ops to stderr); 1 round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON results [runs/bench/speed-DEVICE.json]")
    ap.add_argument("--ct2", action="store_true", help="greedy/beam5: also CTranslate2 float32 and int8")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    import torch

    from attn_cli.config import PRESETS

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA GPU is available")
    sizes = dict(QUICK if args.quick else FULL)
    for key, opt in (("iters", args.iters), ("warmup", args.warmup), ("rounds", args.rounds),
                     ("dec_batch", args.batch), ("dec_len", args.dec_len),
                     ("train_batch", args.train_batch), ("src_len", args.seq_len),
                     ("tgt_len", args.seq_len), ("cls_batch", args.cls_batch), ("cls_len", args.cls_len)):
        if opt is not None:
            sizes[key] = opt
    if args.profile:
        sizes["rounds"] = 1
    presets = (args.presets or ("small" if args.quick else "small,base")).split(",")
    measures = args.measures.split(",")
    for m in measures:
        if m not in MEASURES:
            ap.error(f"unknown measure {m!r} (choose from {', '.join(MEASURES)})")
    for p in presets:
        if p not in PRESETS:
            ap.error(f"unknown preset {p!r} (choose from {', '.join(PRESETS)})")
    if max(sizes["src_len"], sizes["tgt_len"], sizes["dec_len"] + 1, sizes["cls_len"]) > args.max_len:
        ap.error("a sequence width exceeds --max-len")
    out_path = Path(args.out or f"runs/bench/speed-{args.device.split(':')[0]}.json")

    # (preset, variant, measure) -> side -> list of worker results, one per round
    raw: dict[tuple, dict[str, list]] = {}
    jobs = [(p, v, m) for p in presets for v in variants(args) for m in measures
            if not (v["compile"] and m in NOT_COMPILED)]
    started = time.time()
    for r in range(sizes["rounds"]):
        sides = ("attn", "hf") if r % 2 == 0 else ("hf", "attn")
        for preset, var, m in jobs:
            extra = CT2_SIDES if args.ct2 and m in NOT_COMPILED else ()
            for side in sides + (extra if r % 2 == 0 else extra[::-1]):
                spec = dict(sizes, side=side, preset=preset, measure=m, device=args.device,
                            variant=var["name"], precision=var["precision"], compile=var["compile"],
                            vocab=args.vocab, max_len=args.max_len, threads=args.threads,
                            seed=args.seed, hf_classifier=args.hf_classifier,
                            dims=PRESETS[preset], profile=args.profile)
                res = run_worker(spec, args.nice)
                raw.setdefault((preset, var["name"], m), {}).setdefault(side, []).append(res)
                print(f"[{time.time() - started:6.0f}s] round {r + 1}/{sizes['rounds']} {preset:5s} "
                      f"{var['name']:18s} {m:9s} {side:11s} {res['throughput']:10.1f} {UNITS[m]:9s} "
                      f"peak +{res['peak_mem_mb']:.0f} MiB", file=sys.stderr, flush=True)

    rows = summarise(raw, args)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "device": args.device, "torch": torch.__version__, "transformers": _version("transformers"),
            "python": platform.python_version(), "threads": rows[0]["threads"] if rows else None,
            "command": " ".join(["python", "benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])]),
            "sizes": sizes, "vocab": args.vocab, "max_len": args.max_len,
            "hf_classifier": args.hf_classifier, "wall_s": round(time.time() - started, 1)}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print_tables(rows, meta)
    print(f"JSON written to {out_path}")
    bad = [r for r in rows if r["params_check"] == "UNEXPLAINED" or not r["same_batch"]]
    return 1 if bad else 0


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def summarise(raw: dict, args) -> list[dict]:
    from attn_cli.config import PRESETS

    rows = []
    for (preset, variant, m), by_side in raw.items():
        a, h = by_side["attn"], by_side["hf"]
        ta = statistics.median(x["median_s"] for x in a)
        th = statistics.median(x["median_s"] for x in h)
        ma = statistics.median(x["peak_mem_mb"] for x in a)
        mh = statistics.median(x["peak_mem_mb"] for x in h)
        diff = h[0]["params"] - a[0]["params"]
        expected = expected_param_diff(PRESETS[preset], m, args.hf_classifier, args.max_len)
        check = "exact" if diff == 0 else ("explained" if diff == expected else "UNEXPLAINED")
        target = TARGETS.get((preset, variant.split()[0], m))
        ratio = (a[0]["units"] / ta) / (h[0]["units"] / th)
        rows.append({
            "preset": preset, "variant": variant, "measure": m, "unit": UNITS[m],
            "attn": a[0]["units"] / ta, "hf": h[0]["units"] / th, "ratio": ratio,
            "target": target, "meets_target": None if target is None else ratio >= target,
            "attn_rounds_s": [x["median_s"] for x in a], "hf_rounds_s": [x["median_s"] for x in h],
            "attn_peak_mb": ma, "hf_peak_mb": mh, "mem_ratio": ma / mh if mh > 0 else None,
            "attn_params": a[0]["params"], "hf_params": h[0]["params"],
            "hf_frozen_params": h[0]["frozen_params"], "param_diff": diff,
            "param_diff_expected": expected, "params_check": check,
            "same_batch": a[0]["batch_checksum"] == h[0]["batch_checksum"],
            "units_per_iter": a[0]["units"], "threads": a[0]["threads"],
        })
        for side in CT2_SIDES:
            if side in by_side:
                c = by_side[side]
                tc = statistics.median(x["median_s"] for x in c)
                rows[-1].update({side: c[0]["units"] / tc, f"{side}_vs_hf": th / tc, f"{side}_vs_attn": ta / tc,
                                 f"{side}_rounds_s": [x["median_s"] for x in c],
                                 f"{side}_same_batch": c[0]["batch_checksum"] == a[0]["batch_checksum"]})
    return rows


def print_tables(rows: list[dict], meta: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    if con.width < 110:  # not a terminal (a pipe, a log file): do not squeeze the tables
        con = Console(width=110)
    con.print(f"attn vs Hugging Face transformers {meta['transformers']}: {meta['machine']}, "
              f"torch {meta['torch']}, {meta['threads']} threads, {meta['date']}")
    t = Table(title="Throughput (higher is better; attn/HF > 1: attn faster)", title_justify="left")
    for col in ("preset", "variant", "measure", "unit", "attn", "HF", "attn/HF", "target"):
        t.add_column(col, justify="left" if col in ("preset", "variant", "measure", "unit") else "right")
    for r in rows:
        target = "" if r["target"] is None else (f">={r['target']:.1f} " + ("ok" if r["meets_target"] else "MISSED"))
        t.add_row(r["preset"], r["variant"], r["measure"], r["unit"], f"{r['attn']:,.0f}",
                  f"{r['hf']:,.0f}", f"{r['ratio']:.2f}", target)
    con.print(t)
    ct2_rows = [r for r in rows if "ct2_int8" in r]
    if ct2_rows:
        t = Table(title="CTranslate2 (same weights, same forced lengths; x = speed-up)", title_justify="left")
        for col in ("preset", "measure", "attn", "HF", "CT2 fp32", "x HF", "x attn", "CT2 int8", "x HF", "x attn"):
            t.add_column(col, justify="left" if col in ("preset", "measure") else "right")
        for r in ct2_rows:
            t.add_row(r["preset"], r["measure"], f"{r['attn']:,.0f}", f"{r['hf']:,.0f}",
                      *(v for side in CT2_SIDES for v in (f"{r[side]:,.0f}", f"{r[side + '_vs_hf']:.2f}",
                                                          f"{r[side + '_vs_attn']:.2f}")))
        con.print(t)
    t = Table(title="Peak memory growth, MiB (max RSS on CPU, max_memory_allocated on CUDA; lower is better)",
              title_justify="left")
    for col in ("preset", "variant", "measure", "attn", "HF", "attn/HF"):
        t.add_column(col, justify="left" if col in ("preset", "variant", "measure") else "right")
    for r in rows:
        t.add_row(r["preset"], r["variant"], r["measure"], f"{r['attn_peak_mb']:,.0f}", f"{r['hf_peak_mb']:,.0f}",
                  "" if r["mem_ratio"] is None else f"{r['mem_ratio']:.2f}")
    con.print(t)
    t = Table(title="Trainable parameters (HF - attn = q/k/v biases - attn's final LayerNorms)",
              title_justify="left")
    for col in ("preset", "model", "attn", "HF", "HF - attn", "check"):
        t.add_column(col, justify="left" if col in ("preset", "model", "check") else "right")
    seen = set()
    for r in rows:
        kind = "seq2seq" if r["measure"] in ("train", "greedy", "beam5") else "classifier"
        if (r["preset"], kind) not in seen:
            seen.add((r["preset"], kind))
            t.add_row(r["preset"], kind, f"{r['attn_params']:,}", f"{r['hf_params']:,}", f"{r['param_diff']:,}",
                      r["params_check"])
    con.print(t)


if __name__ == "__main__":
    sys.exit(main())
