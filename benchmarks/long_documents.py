"""Summaries of the longest documents: the ones past the model's positions are cut, not refused.

Takes a summarize run and a JSON-lines test split with ``dialogue`` (or ``document``), and
``summary`` / ``references`` fields; summarizes the ``--n`` longest documents (by source tokens)
with the Python API and scores them with ROUGE (best of the references) beside lead-3 on the
same documents, counting the documents cut to the model's positions (each gets a note).

    python benchmarks/long_documents.py --run RUN --data ../shared/data/summarization/dialogsum/test.jsonl --n 50

Prints one JSON line (appended to --json when given).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attn_cli  # noqa: E402
from attn_cli.data.tokenizer import Tokenizers  # noqa: E402
from attn_cli.eval.baselines import lead  # noqa: E402
from attn_cli.eval.metrics import rouge  # noqa: E402


def load(path: Path) -> tuple[list[str], list[list[str]]]:
    """Documents and their references from a JSON-lines split."""
    docs, refs = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        docs.append(row.get("dialogue") or row["document"])
        refs.append(row.get("references") or [row["summary"]])
    return docs, refs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="attn run directory (a summarize model)")
    ap.add_argument("--data", type=Path, required=True, help="JSON-lines split (dialogue/document, summary)")
    ap.add_argument("--n", type=int, default=50, help="how many of the longest documents (default 50)")
    ap.add_argument("--json", type=Path, default=None, help="append the result line here")
    args = ap.parse_args()
    model = attn_cli.load(args.run)
    docs, refs = load(args.data)
    lengths = [len(ids) for ids in model.encode(docs)[0]]  # (cut to the positions: ties at the cap)
    full = [len(x) for x in Tokenizers.load(args.run).src.encode_batch(docs)]  # (uncut)
    order = sorted(range(len(docs)), key=lambda i: -full[i])[:args.n]
    start = time.perf_counter()
    outs = model.summarize([docs[i] for i in order])
    seconds = time.perf_counter() - start
    chosen = [refs[i] for i in order]
    row = {"run": args.run.name, "data": args.data.name, "documents": len(order),
           "positions": model.info["model"]["max_len"],
           "source_tokens_min_max": [min(full[i] for i in order), max(full[i] for i in order)],
           "cut": sum(1 for o in outs if o.notes), "cut_expected": sum(1 for i in order if full[i] > lengths[i]),
           "model": {k: round(v, 2) for k, v in rouge([o.text for o in outs], chosen).items()},
           "lead3": {k: round(v, 2) for k, v in rouge([lead(docs[i]) for i in order], chosen).items()},
           "seconds": round(seconds, 1), "example_note": next((o.notes[0] for o in outs if o.notes), None),
           "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(row))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
