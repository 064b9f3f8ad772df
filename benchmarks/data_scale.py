"""Training data at scale: wall time and memory of `attn train` as the corpus grows.

Builds Tatoeba it-en corpora scaled x1, x10, x30 (copy k > 0 of every line gets " (k)" on both
sides, so no line repeats exactly), trains one tokenizer on x1, then for each scale runs
`attn train translate --preset tiny --max-steps N --tokenizer TOK` twice with a fresh cache:
the first start tokenizes into the cache, the second reads it. Reports wall time, the time to
the first training step (from metrics.jsonl) and max RSS (/usr/bin/time). Other measures:

  --ddp        2 gloo processes on x1 and x10: the ranks' RSS and PSS (proportional set size: a
               shared page counts 1/2 in each), sampled from /proc/PID/smaps_rollup
  --stream     --stream on x30: trains, is interrupted with SIGINT, resumes; max RSS
  --throughput training tokens/s of the cached path against the in-memory list path, side by
               side in one process (small preset, Multi30k de-en, same batches)
  --gpu        base on x10 in bf16 on CUDA at --max-tokens 16k/32k/64k: tokens/s, MFU, data wait
               (benchmarks/gpu_check.sh runs it as STAGES=data)

    python benchmarks/data_scale.py                       # scales 1,10,30
    python benchmarks/data_scale.py --scales 10 --ddp --stream --throughput
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TATOEBA = SHARED / "translation" / "tatoeba-it-en" / "train.jsonl"
MULTI30K = SHARED / "translation" / "multi30k"
ATTN = [sys.executable, "-m", "attn_cli"]  # this checkout's attn, installed or not


def build_corpus(work: Path, scale: int) -> Path:
    out = work / f"tatoeba-x{scale}.jsonl"
    if out.is_file():
        return out
    lines = TATOEBA.read_text(encoding="utf-8").splitlines()
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for k in range(scale):
            for line in lines:
                row = json.loads(line)
                if k:
                    row = {"it": f"{row['it']} ({k})", "en": f"{row['en']} ({k})"}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.rename(out)
    return out


def tokenizer(work: Path) -> Path:
    tok = work / "tok"
    if not (tok / "tokenizer.model").is_file():
        subprocess.run([*ATTN, "tokenizer", "train", "--data", str(build_corpus(work, 1)), "--src", "it",
                        "--tgt", "en", "--task", "translate", "--out", str(tok), "--overwrite"],
                       check=True, capture_output=True)
    return tok


def timed(cmd: list[str], env: dict, log: Path) -> dict:
    """Run ``cmd`` under /usr/bin/time; wall seconds and max RSS in MB."""
    started = time.time()
    timer = ["/usr/bin/time", "-f", "TIME %e %M"] if os.path.exists("/usr/bin/time") else []
    with open(log, "w") as fh:
        r = subprocess.run([*timer, *cmd], stdout=fh, stderr=subprocess.STDOUT, env=env)
    text = log.read_text()
    m = re.findall(r"TIME ([\d.]+) (\d+)", text)
    if r.returncode != 0 or (timer and not m):
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{text[-2000:]}")
    if not m:  # no /usr/bin/time (a bare GPU image): wall time only
        return {"wall_s": round(time.time() - started, 2), "max_rss_mb": None, "started": started}
    wall, rss = m[-1]
    return {"wall_s": float(wall), "max_rss_mb": int(rss) / 1024, "started": started}


def step_stats(run: Path, started: float) -> dict:
    """Seconds from the command's start to its first training step, and the share of training
    time the step spent waiting for the next batch (after the first step)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("event") == "train"]
    waits = [r["data_wait"] for r in train[1:] if "data_wait" in r]
    return {"first_step_s": round(train[0]["time"] - started, 2) if train else None,
            "data_wait": round(sum(waits) / len(waits), 4) if waits else None}


def train_cmd(corpus: Path, tok: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [*ATTN, "train", "translate", "--data", str(corpus), "--src", "it", "--tgt", "en", "--out",
            str(out), "--preset", "tiny", "--max-steps", str(steps), "--tokenizer", str(tok),
            "--log-every", "1", "--eval-every", "100000", "--eval-samples", "50", *extra]


def scales(args, work: Path, env: dict) -> list[dict]:
    rows = []
    tok = tokenizer(work)
    for scale in args.scales:
        corpus = build_corpus(work, scale)
        steps = args.steps_x30 if scale >= 30 else args.steps
        cache = work / f"cache-x{scale}"
        shutil.rmtree(cache, ignore_errors=True)
        e = {**env, "ATTN_CACHE": str(cache)}
        for start in ("first", "second"):
            out = work / f"run-x{scale}"
            r = timed(train_cmd(corpus, tok, out, steps, "--overwrite"), e, work / f"x{scale}-{start}.log")
            r.update(scale=scale, start=start, steps=steps, **step_stats(out, r.pop("started")))
            rows.append(r)
            print(json.dumps(r), flush=True)
    return rows


def memory_of(pids: list[int]) -> tuple[float, float, float]:
    """Summed RSS, PSS and private memory (Private_Clean + Private_Dirty: pages no other process
    maps, so shared library code and shared files count in none) of ``pids``, in MB."""
    rss = pss = private = 0.0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        kb = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
        rss += kb["Rss"] / 1024
        pss += kb["Pss"] / 1024
        private += (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024
    return rss, pss, private


def ddp(args, work: Path, env: dict) -> dict:
    """Peak of the summed RSS, PSS and private memory of both ranks, against one process on the same data, on x1
    and x10: what the corpus adds to each rank is the difference between the two scales."""
    tok = tokenizer(work)
    result = {}
    for scale in (1, 10):
        corpus, cache = build_corpus(work, scale), work / f"cache-x{scale}"
        e = {**env, "ATTN_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
        for label, nproc in (("1 process", 1), ("2 gloo processes", 2)):
            extra = ["--nproc", "2"] if nproc == 2 else []
            cmd = train_cmd(corpus, tok, work / f"ddp-{nproc}", args.steps, "--overwrite", "--device", "cpu",
                            *extra)
            proc = subprocess.Popen(cmd, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            peak = [0.0, 0.0, 0.0]  # summed RSS, PSS, private memory
            while proc.poll() is None:
                ranks = _ranks(proc.pid) if nproc == 2 else [proc.pid]
                peak = [max(a, b) for a, b in zip(peak, memory_of(ranks), strict=True)]
                time.sleep(0.2)
            key = f"x{scale} {label}"
            result[key] = {"peak_sum_rss_mb": round(peak[0]), "peak_sum_pss_mb": round(peak[1]),
                           "peak_sum_private_mb": round(peak[2]),
                           "exit": proc.returncode}
            print(key, json.dumps(result[key]), flush=True)
    return result


def _ranks(launcher: int) -> list[int]:
    """The training processes under the torchrun launcher (its children's children too)."""
    out = subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True, text=True).stdout.split()
    kids = [int(p) for p in out]
    grand = [int(p) for k in kids for p in
             subprocess.run(["pgrep", "-P", str(k)], capture_output=True, text=True).stdout.split()]
    return grand or kids


def stream(args, work: Path, env: dict) -> dict:
    """--stream on x30: SIGINT after a while, --resume to the end; max RSS of both parts."""
    corpus, tok = build_corpus(work, 30), tokenizer(work)
    out = work / "run-stream"
    e = {**env, "ATTN_CACHE": str(work / "cache-stream")}
    valid = build_valid(work)
    cmd = train_cmd(corpus, tok, out, args.steps_x30, "--stream", "--valid", str(valid))
    shutil.rmtree(out, ignore_errors=True)
    log = work / "stream-first.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(["/usr/bin/time", "-f", "TIME %e %M", *cmd], env=e, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if (out / "metrics.jsonl").is_file() and sum(
                    1 for _ in open(out / "metrics.jsonl")) >= args.steps_x30 // 2:
                os.killpg(proc.pid, signal.SIGINT)
                break
            time.sleep(0.5)
        proc.wait()
    first = re.findall(r"TIME ([\d.]+) (\d+)", log.read_text())
    resumed = timed(train_cmd(corpus, tok, out, args.steps_x30, "--stream", "--valid", str(valid), "--resume"),
                    e, work / "stream-resume.log")
    state = json.loads((out / "last" / "state.json").read_text())
    result = {"interrupted_exit": proc.returncode, "first_max_rss_mb": int(first[-1][1]) / 1024 if first else None,
              "resume_wall_s": resumed["wall_s"], "resume_max_rss_mb": resumed["max_rss_mb"],
              "final_step": state["step"], "data": state["data"]}
    print("stream", json.dumps(result), flush=True)
    return result


def build_valid(work: Path) -> Path:
    out = work / "tatoeba-valid.jsonl"
    shutil.copyfile(TATOEBA.with_name("validation.jsonl"), out)
    return out


def throughput(args, work: Path) -> dict:
    """Training tokens/s, cached TokenStore against the same examples as an in-memory list,
    interleaved rounds in this process (small preset, Multi30k de-en)."""
    import torch

    from attn_cli.config import TrainConfig, model_config_from_preset
    from attn_cli.data.rundata import DataRequest, load_run_data
    from attn_cli.data.spec import Fields
    from attn_cli.data.tokenizer import TokenizerConfig, train_tokenizers
    from attn_cli.model.transformer import build_model
    from attn_cli.train import distributed as dd
    from attn_cli.train.trainer import Trainer

    torch.set_num_threads(2)

    class Quiet:
        def step(self, s): ...
        def evaluated(self, m, b): ...
        def note(self, m): ...

    fields = Fields(src_lang="de", tgt_lang="en")
    req = DataRequest(spec=str(MULTI30K / "train"), task="translate", fields=fields,
                      valid_spec=str(MULTI30K / "val"), cache=work / "cache-m30k")
    data, toks = load_run_data(req, None, lambda ds: train_tokenizers(ds, ["src"], ["tgt"], TokenizerConfig()),
                               print)
    in_memory = list(data.train)
    rates: dict[str, list[float]] = {"cached": [], "in-memory": []}
    for rnd in range(args.rounds):
        sides = [("cached", data.train), ("in-memory", in_memory)]
        for name, train in sides if rnd % 2 == 0 else sides[::-1]:  # alternate who goes first
            cfg = TrainConfig(task="translate", preset="small", max_steps=args.throughput_steps * (rnd + 1),
                              eval_every=10**9, log_every=10**9, device="cpu")
            mcfg = model_config_from_preset("small", "translate", toks.src.vocab_size)
            torch.manual_seed(1)
            trainer = Trainer(cfg, mcfg, build_model(mcfg), toks, train, data.valid[:8], data.refs[:8],
                              work / "tp-run", Quiet(), dd.Dist(), torch.device("cpu"))
            trainer.state.data.position = rnd * args.throughput_steps  # each round on new batches
            trainer.state.step = rnd * args.throughput_steps
            trainer._evaluate_and_save = lambda log: None
            trainer.save_last = lambda: None
            t0 = time.perf_counter()
            trainer.run(lambda row: None)
            rates[name].append(trainer.state.tokens / (time.perf_counter() - t0))
        print(f"round {rnd}: " + ", ".join(f"{k} {v[-1]:,.0f} tok/s" for k, v in rates.items()), flush=True)
    mean = {k: sum(v) / len(v) for k, v in rates.items()}
    result = {"tokens_per_s": {k: round(v) for k, v in mean.items()},
              "ratio_cached_to_in_memory": round(mean["cached"] / mean["in-memory"], 3)}
    print("throughput", json.dumps(result), flush=True)
    return result


H100_H200_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100/H200 SXM (NVIDIA's datasheet)


def gpu(args, work: Path, env: dict) -> dict:
    """`base` on x10 in bf16 on CUDA for --gpu-seconds at each --max-tokens: target tokens/s,
    MFU and the share of time the step waited for data. FLOPs per step are taken as
    6 x parameters x (source + target tokens) (the usual estimate; attention's own products,
    small at these lengths, are left out); source tokens are counted as the target's, which
    Tatoeba's pairs of similar length make close."""
    corpus, tok = build_corpus(work, 10), tokenizer(work)
    e = {**env, "ATTN_CACHE": str(work / "cache-x10")}
    result = {}
    for mt in args.gpu_max_tokens:
        out = work / f"gpu-{mt}"
        cmd = [*ATTN, "train", "translate", "--data", str(corpus), "--src", "it", "--tgt", "en", "--out", str(out),
               "--preset", "base", "--tokenizer", str(tok), "--device", "cuda", "--precision", "bf16",
               "--max-tokens", str(mt), "--time-budget", f"{args.gpu_seconds}s", "--log-every", "10",
               "--eval-every", "100000", "--eval-samples", "20", "--overwrite"]
        timed(cmd, e, work / f"gpu-{mt}.log")
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in rows if r.get("event") == "train"][1:]  # the first window holds start-up
        params = json.loads((out / "config.json").read_text())["parameters"]
        tps = sum(r["tokens_per_s"] for r in train) / max(len(train), 1)
        result[mt] = {"target_tokens_per_s": round(tps), "parameters": params,
                      "mfu": round(6 * params * 2 * tps / H100_H200_BF16_PEAK, 4),
                      "data_wait_max": max((r["data_wait"] for r in train), default=None),
                      "data_wait_mean": round(sum(r["data_wait"] for r in train) / max(len(train), 1), 4)}
        print(f"gpu max_tokens {mt}", json.dumps(result[mt]), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/attn-data-scale"), help="corpora, caches, runs")
    ap.add_argument("--scales", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 30])
    ap.add_argument("--steps", type=int, default=20, help="training steps at scales below 30")
    ap.add_argument("--steps-x30", type=int, default=200, help="training steps at x30")
    ap.add_argument("--no-scales", action="store_true", help="skip the scale table")
    ap.add_argument("--ddp", action="store_true")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--throughput-steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data-root", type=Path, default=SHARED, help="the shared datasets (default ../shared/data)")
    ap.add_argument("--gpu", action="store_true", help="base on x10, bf16 on CUDA (see gpu())")
    ap.add_argument("--gpu-max-tokens", type=lambda s: [int(x) for x in s.split(",")], default=[16384, 32768, 65536])
    ap.add_argument("--gpu-seconds", type=int, default=45)
    args = ap.parse_args()
    global TATOEBA, MULTI30K
    TATOEBA = args.data_root / "translation" / "tatoeba-it-en" / "train.jsonl"
    MULTI30K = args.data_root / "translation" / "multi30k"
    if not TATOEBA.is_file():
        sys.exit(f"needs {TATOEBA} (../shared/data beside the repository)")
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    report = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    if not args.no_scales:
        report["scales"] = scales(args, args.work, env)
    if args.ddp:
        report["ddp"] = ddp(args, args.work, env)
    if args.stream:
        report["stream"] = stream(args, args.work, env)
    if args.throughput:
        report["throughput"] = throughput(args, args.work)
    if args.gpu:
        report["gpu"] = gpu(args, args.work, env)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
