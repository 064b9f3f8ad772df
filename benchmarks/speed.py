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

The code: this driver, the measurement in ``speed_worker.py``, the models in ``speed_models.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from speed_models import BOS, EOS, PAD, marian_config  # noqa: F401  (epoch_time.py imports them from here)
from speed_worker import CT2_SIDES, worker

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


def variants(args: argparse.Namespace) -> list[dict]:
    """The configurations measured: CPU fp32, or CUDA bf16 (or --precision) eager and/or compiled."""
    if args.device == "cpu":
        return [{"name": "cpu fp32", "precision": args.precision or "fp32", "compile": False}]
    prec = args.precision or "bf16"
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    return [{"name": f"cuda {prec}" + (" compile" if c else ""), "precision": prec, "compile": c}
            for c in modes]


def run_worker(spec: dict, nice: int) -> dict:
    """One measurement in a fresh ``speed.py --worker JSON`` process (under ``nice -n``); its result."""
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
    """The CPU model and core count, and the GPU if there is one."""
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

def parser() -> argparse.ArgumentParser:
    """The command line; ``--worker JSON`` (hidden) runs one measurement, see :func:`run_worker`."""
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
    return ap


def sizes_of(args: argparse.Namespace) -> dict:
    """The batch sizes, widths and repeats: --quick or the full ones, with the options' overrides."""
    sizes = dict(QUICK if args.quick else FULL)
    for key, opt in (("iters", args.iters), ("warmup", args.warmup), ("rounds", args.rounds),
                     ("dec_batch", args.batch), ("dec_len", args.dec_len),
                     ("train_batch", args.train_batch), ("src_len", args.seq_len),
                     ("tgt_len", args.seq_len), ("cls_batch", args.cls_batch), ("cls_len", args.cls_len)):
        if opt is not None:
            sizes[key] = opt
    if args.profile:
        sizes["rounds"] = 1
    return sizes


def presets_and_measures(ap: argparse.ArgumentParser, args: argparse.Namespace,
                         sizes: dict) -> tuple[list[str], list[str]]:
    """The presets and measures asked for; a usage error on unknown ones or too long widths."""
    from attn_cli.config import PRESETS

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
    return presets, measures


def run_rounds(args: argparse.Namespace, sizes: dict, presets: list[str], measures: list[str],
               started: float) -> dict[tuple, dict[str, list]]:
    """Every worker, interleaved (attn, HF in even rounds, HF, attn in odd ones), progress to stderr.

    Returns (preset, variant, measure) -> side -> the worker results, one per round."""
    from attn_cli.config import PRESETS

    raw: dict[tuple, dict[str, list]] = {}
    jobs = [(p, v, m) for p in presets for v in variants(args) for m in measures
            if not (v["compile"] and m in NOT_COMPILED)]
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
    return raw


def metadata(args: argparse.Namespace, argv: list[str] | None, sizes: dict, rows: list[dict],
             started: float) -> dict:
    """The ``meta`` block of the results JSON: when, where, which versions, which command."""
    import torch

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "device": args.device, "torch": torch.__version__, "transformers": _version("transformers"),
            "python": platform.python_version(), "threads": rows[0]["threads"] if rows else None,
            "command": " ".join(["python", "benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])]),
            "sizes": sizes, "vocab": args.vocab, "max_len": args.max_len,
            "hf_classifier": args.hf_classifier, "wall_s": round(time.time() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the comparison (or, with ``--worker``, one measurement); 1 if a check failed."""
    ap = parser()
    args = ap.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA GPU is available")
    sizes = sizes_of(args)
    presets, measures = presets_and_measures(ap, args, sizes)
    out_path = Path(args.out or f"runs/bench/speed-{args.device.split(':')[0]}.json")

    started = time.time()
    raw = run_rounds(args, sizes, presets, measures, started)
    rows = summarise(raw, args)
    meta = metadata(args, argv, sizes, rows, started)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print_tables(rows, meta)
    print(f"JSON written to {out_path}")
    bad = [r for r in rows if r["params_check"] == "UNEXPLAINED" or not r["same_batch"]]
    return 1 if bad else 0


def _version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def summarise(raw: dict, args: argparse.Namespace) -> list[dict]:
    """One row per (preset, variant, measure): median throughputs, ratios, memory, parameter check."""
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
    """The throughput, CTranslate2, memory and parameter tables (rich) to stdout."""
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
