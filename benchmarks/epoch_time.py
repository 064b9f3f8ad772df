#!/usr/bin/env python
"""One epoch of Multi30k de->en: `attn train` against a plain Hugging Face `Seq2SeqTrainer`.

    python benchmarks/epoch_time.py                      # small preset, both sides, ~10 min on 2 cores
    python benchmarks/epoch_time.py --limit 2000 --vocab-size 1000   # a smoke run on 2,000 pairs

Both sides train the same model shape (attn's preset against a randomly initialised
``MarianMTModel`` of identical dimensions, built by ``benchmarks/speed.py``), from the same
SentencePiece tokenizer (trained once by ``attn tokenizer train``), for one epoch, fp32, with the
same optimizer settings (AdamW 0.9/0.98, peak lr 7e-4, 800 warmup steps, label smoothing 0.1,
clipping 1.0) and the same number of optimizer steps: the Hugging Face batch size is the number
of training pairs divided by the number of token-budget batches attn plans for the epoch (same
sentences per step on average). What differs is what each tool does by default: attn batches
length-sorted sentences up to ``--max-tokens`` padded tokens; the Trainer draws random batches
of a fixed size and pads them to their longest sentence (``--hf-group-by-length`` uses its
length-grouped sampler instead). So this measures the data pipeline and padding, not only
kernels.

attn runs as a subprocess (``python -m attn_cli train ... --epochs 1``, exactly what a user
types); its epoch time is the training loop's own clock (``last/state.json``), the Trainer's is
``trainer.train()``'s ``train_runtime``. Whole-process wall times are reported too. Results go
to ``--json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from quality import attn_cmd, run_logged  # noqa: E402


def run(cmd: list[str], log: Path) -> float:
    """Run cmd (output to log); exit on failure; return wall seconds."""
    code, secs, _ = run_logged(cmd, log)
    if code != 0:
        sys.exit(f"error: {shlex.join(cmd[3:5])} exited {code}; see {log}")
    return secs


def encoded_pairs(data: str, tok_dir: Path) -> list[tuple]:
    """(src_ids, tgt_ids) pairs exactly as attn encodes them (max_len 256)."""
    from attn_cli.data.spec import Fields
    from attn_cli.data.tasks import encode_examples, load_task_data
    from attn_cli.data.tokenizer import Tokenizers

    task = load_task_data(data, "translate", Fields(src_lang="de", tgt_lang="en"), need_valid=False)
    examples, _ = encode_examples(task.train, "translate", Tokenizers.load(tok_dir), max_len=256)
    return examples


def attn_epoch(args, data: str, tok_dir: Path, work: Path, log: Path) -> dict:
    out = work / "attn-run"
    cmd = attn_cmd("train", "translate", "--data", data, "--valid", args.valid, "--src", "de",
                   "--tgt", "en", "--tokenizer", str(tok_dir), "--preset", args.preset, "--epochs", "1",
                   "--max-tokens", str(args.max_tokens), "--eval-every", "100000000",
                   "--eval-samples", "1", "--out", str(out), "--overwrite")
    wall = run(cmd, log)
    state = json.loads((out / "last" / "state.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    pads = [r["pad_fraction"] for r in rows if r.get("event") == "train"]
    meta = json.loads((out / "config.json").read_text())
    return {"side": "attn", "command": shlex.join(["attn", *cmd[3:]]), "process_wall_s": round(wall, 1),
            "epoch_s": round(state["train_seconds"], 1), "steps": state["step"],
            "target_tokens": state["tokens"], "params": meta["parameters"],
            "pad_fraction": round(sum(pads) / len(pads), 4) if pads else None}


def hf_epoch(args, pairs: list[tuple], batch_size: int, tok_dir: Path, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from speed import BOS, EOS, PAD, marian_config
    from transformers import MarianMTModel, Seq2SeqTrainer, Seq2SeqTrainingArguments

    from attn_cli.config import PRESETS
    from attn_cli.data.tokenizer import Tokenizers

    start = time.perf_counter()
    vocab = Tokenizers.load(tok_dir).src.vocab_size
    torch.manual_seed(1)
    model = MarianMTModel(marian_config({"vocab": vocab, "dims": PRESETS[args.preset], "max_len": 256}))
    ds = Dataset.from_dict({"input_ids": [s or [EOS] for s, _ in pairs],
                            "labels": [t + [EOS] for _, t in pairs]})
    counts = {"real": 0, "slots": 0}

    def collate(rows: list[dict]) -> dict:
        """Pad to the longest in the batch: pad id for inputs, -100 for labels (ignored)."""
        s = max(len(r["input_ids"]) for r in rows)
        t = max(len(r["labels"]) for r in rows)
        ids = torch.full((len(rows), s), PAD, dtype=torch.long)
        labels = torch.full((len(rows), t), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
            labels[i, :len(r["labels"])] = torch.tensor(r["labels"])
        counts["real"] += int(ids.ne(PAD).sum() + labels.ne(-100).sum())
        counts["slots"] += ids.numel() + labels.numel()
        # decoder inputs: BOS + labels shifted right (what DataCollatorForSeq2Seq asks the model for)
        shifted = labels[:, :-1].masked_fill(labels[:, :-1] == -100, PAD)
        dec = torch.cat([torch.full((len(rows), 1), BOS), shifted], 1)
        return {"input_ids": ids, "attention_mask": ids.ne(PAD).long(), "labels": labels,
                "decoder_input_ids": dec}

    targs = Seq2SeqTrainingArguments(
        output_dir=str(work / "hf-run"), per_device_train_batch_size=batch_size, num_train_epochs=1,
        learning_rate=7e-4, warmup_steps=800, lr_scheduler_type="inverse_sqrt", weight_decay=0.01,
        adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-9, max_grad_norm=1.0,
        label_smoothing_factor=0.1, logging_steps=100,
        train_sampling_strategy="group_by_length" if args.hf_group_by_length else "random",
        save_strategy="no", eval_strategy="no", report_to=[], dataloader_num_workers=0, seed=1,
        disable_tqdm=True, use_cpu=args.device == "cpu", remove_unused_columns=False)
    trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=ds, data_collator=collate)
    out = trainer.train()
    wall = time.perf_counter() - start
    # trainable only: Marian keeps its sinusoidal positions as frozen embedding weights
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values() if p.requires_grad)
    return {"side": "hf", "process_wall_s": round(wall, 1), "epoch_s": round(out.metrics["train_runtime"], 1),
            "steps": out.global_step, "batch_size": batch_size, "group_by_length": args.hf_group_by_length,
            "target_tokens": sum(len(t) + 1 for _, t in pairs), "params": n_params,
            "pad_fraction": round(1 - counts["real"] / max(counts["slots"], 1), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data",
                    help="folder with translation/multi30k [../shared/data]")
    ap.add_argument("--preset", default="small", help="attn preset; the HF model copies its shape [small]")
    ap.add_argument("--max-tokens", type=int, default=4096, help="attn --max-tokens [4096]")
    ap.add_argument("--vocab-size", type=int, default=8000, help="joint tokenizer size [8000]")
    ap.add_argument("--limit", type=int, default=None, help="train on the first N pairs only (smoke runs)")
    ap.add_argument("--hf-group-by-length", action="store_true",
                    help="let the Trainer group similar lengths (train_sampling_strategy=group_by_length)")
    ap.add_argument("--skip-attn", action="store_true", help="time only the Trainer")
    ap.add_argument("--skip-hf", action="store_true", help="time only attn")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="[cpu]")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder [a temporary one]")
    ap.add_argument("--json", dest="json_path", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    m30k = args.data_root.resolve() / "translation" / "multi30k"
    if not (m30k / "train.de").is_file():
        ap.error(f"no Multi30k in {m30k} (expected train.de/train.en); pass --data-root")
    work = args.work or Path(tempfile.mkdtemp(prefix="attn-epoch-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "epoch_time.log"
    data, args.valid = str(m30k / "train"), str(m30k / "val")
    if args.limit:  # a head of the training files, through a small parallel-text prefix
        for lang in ("de", "en"):
            lines = (m30k / f"train.{lang}").read_text(encoding="utf-8").splitlines()[:args.limit]
            (work / f"head.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
        data = str(work / "head")

    import torch

    from attn_cli.data.batching import make_batches, seq2seq_lengths

    tok_dir = work / "tokenizer"
    tok_wall = run(attn_cmd("tokenizer", "train", "--data", data, "--src", "de", "--tgt", "en",
                            "--vocab-size", str(args.vocab_size), "--out", str(tok_dir), "--overwrite"), log)
    pairs = encoded_pairs(data, tok_dir)
    n_batches = len(make_batches(seq2seq_lengths(pairs), args.max_tokens, seed=1, epoch=0))
    batch_size = max(1, round(len(pairs) / n_batches))
    print(f"{len(pairs):,} pairs; attn plans {n_batches:,} batches of <= {args.max_tokens} padded "
          f"tokens, so the Trainer gets batch size {batch_size}", file=sys.stderr, flush=True)
    results = []
    if not args.skip_attn:
        print("attn: one epoch ...", file=sys.stderr, flush=True)
        results.append(attn_epoch(args, data, tok_dir, work, log))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if not args.skip_hf:
        print("Hugging Face Seq2SeqTrainer: one epoch ...", file=sys.stderr, flush=True)
        results.append(hf_epoch(args, pairs, batch_size, tok_dir, work))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)

    import transformers

    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join(["python", "benchmarks/epoch_time.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "pairs": len(pairs),
            "tokenizer_s": round(tok_wall, 1), "work": str(work)}
    print(f"\nMulti30k de→en, one epoch, `{args.preset}`, {meta['threads']} threads ({meta['date']})\n")
    print("| side | steps | epoch time | target tok/s | padding | process wall |")
    print("|---|---|---|---|---|---|")
    for r in results:  # attn logs padding every --log-every (50) steps: none in a tiny run
        pad = "—" if r["pad_fraction"] is None else f"{100 * r['pad_fraction']:.1f}%"
        name = "attn train" if r["side"] == "attn" else (
            "HF Seq2SeqTrainer" + (" (group_by_length)" if r["group_by_length"] else ""))
        print(f"| {name} | {r['steps']:,} | {r['epoch_s']:.1f} s | {r['target_tokens'] / r['epoch_s']:,.0f} | "
              f"{pad} | {r['process_wall_s']:.1f} s |")
    if len(results) == 2:
        print(f"\nattn / HF epoch-time speed-up: {results[1]['epoch_s'] / results[0]['epoch_s']:.2f}x")
    if args.json_path:
        args.json_path.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
