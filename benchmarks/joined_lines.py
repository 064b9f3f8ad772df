"""Longer inputs than the training sentences: a test set's lines joined k at a time.

A model trained on single sentences tends to translate the first sentence of a longer input and
stop. This joins a line-aligned test set's lines ``--group`` at a time (sources with a space,
references with a space; a short tail is left out) and translates three ways with `attn
translate`: the original lines, the joined lines whole (``--no-split-sentences``), and the
joined lines split into sentences (the default). Scores are sacreBLEU BLEU and chrF against the
matching references, with the output/reference length ratio. The original lines' outputs are
also scored joined like the inputs ("lines, scored joined"): BLEU counts n-grams across the
joins (". A man"), so that row, not the lines' own score, is what the joined inputs compare to.

    python benchmarks/joined_lines.py --run RUN --src ../shared/data/translation/multi30k/test_2016_flickr.de \\
        --ref ../shared/data/translation/multi30k/test_2016_flickr.en --group 3 --json results/joined_lines.jsonl

Writes one JSON line per (run, input) to --json as each finishes, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sacrebleu

ROOT = Path(__file__).resolve().parent.parent


def joined(lines: list[str], k: int) -> list[str]:
    """Lines k at a time, joined with a space; a tail shorter than k is left out."""
    return [" ".join(lines[i:i + k]) for i in range(0, len(lines) - len(lines) % k, k)]


def translate(run: Path, inputs: list[str], extra: list[str], work: Path, beam: int | None) -> tuple[list[str], float]:
    """`attn translate` of ``inputs`` (one a line): the outputs and the wall seconds."""
    src, out = work / "in.txt", work / "out.txt"
    src.write_text("\n".join(inputs) + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "attn_cli", "translate", "--model", str(run.resolve()), "-i", str(src), "-o", str(out),
           *(["--beam", str(beam)] if beam else []), *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out.read_text(encoding="utf-8").splitlines(), time.perf_counter() - start


def score(hyps: list[str], refs: list[str]) -> dict:
    bleu = sacrebleu.corpus_bleu(hyps, [refs])
    return {"bleu": round(bleu.score, 2), "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2),
            "length_ratio": round(bleu.sys_len / max(bleu.ref_len, 1), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="attn run directory (a translate model)")
    ap.add_argument("--src", type=Path, required=True, help="source lines of a test set")
    ap.add_argument("--ref", type=Path, required=True, help="reference lines, aligned with --src")
    ap.add_argument("--group", type=int, default=3, help="lines joined into one input (default 3)")
    ap.add_argument("--beam", type=int, default=None, help="beam size (default: the task's)")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line per result here")
    args = ap.parse_args()
    src = args.src.read_text(encoding="utf-8").splitlines()
    ref = args.ref.read_text(encoding="utf-8").splitlines()
    if len(src) != len(ref) or args.group < 1:
        ap.error("--src and --ref must have the same number of lines, and --group must be >= 1")
    sides = [("lines", src, ref, []),
             (f"joined x{args.group}, --no-split-sentences", joined(src, args.group), joined(ref, args.group),
              ["--no-split-sentences"]),
             (f"joined x{args.group}, --split-sentences", joined(src, args.group), joined(ref, args.group),
              ["--split-sentences"])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, inputs, refs, extra in sides:
            hyps, seconds = translate(args.run, inputs, extra, Path(tmp), args.beam)
            row = {"run": args.run.name, "test": args.src.name, "input": name, "inputs": len(inputs),
                   **score(hyps, refs), "seconds": round(seconds, 1), "date": time.strftime("%Y-%m-%d")}
            rows.append(row)
            if name == "lines":  # the same outputs scored in threes: what joining alone does to BLEU
                rows.append({**row, "input": f"lines, scored joined x{args.group}",
                             "inputs": len(joined(src, args.group)),
                             **score(joined(hyps, args.group), joined(ref, args.group))})
            for r in rows[-2 if name == "lines" else -1:]:
                print(json.dumps(r), flush=True)
                if args.json:
                    with open(args.json, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(r) + "\n")
    print("\n| input | inputs | BLEU | chrF | length ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['input']} | {r['inputs']} | {r['bleu']} | {r['chrf']} | {r['length_ratio']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
