#!/usr/bin/env bash
# One prepared run on a GPU machine, under 10 minutes in all (each part has its own time limit):
#   1. the CUDA tests (pytest -m gpu): bf16 autocast, fused AdamW, flash SDPA, torch.compile;
#   2. the GPU-budget quality suite: a short bf16 training of each of the five datasets
#      (base preset, 25-80 s each), its test score, tokens/s, and the in-run baselines;
#   3. the speed comparison with Hugging Face transformers on CUDA (bf16, eager and compiled).
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (default $OUT, else /tmp/attn-gpu)
# Results: OUT_DIR/summary.txt (everything below), quality-gpu.md/.json, speed-cuda.json.
# Run directories (weights) go to /tmp/attn-gpu-runs, not OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp/attn-gpu}}
RUNS=/tmp/attn-gpu-runs
mkdir -p "$OUT_DIR" "$RUNS"
export PYTHONUNBUFFERED=1
SUMMARY="$OUT_DIR/summary.txt"
# A bare GPU machine has torch, transformers, typer, rich, sentencepiece, safetensors and sacrebleu
# but not datasets or rouge-score, and no network: benchmarks/gpu_wheels.sh (run beforehand where
# pip works) puts those wheels in .whl/, which the device call carries. attn_cli runs from here.
if [ -d .whl ] && ! python -c "import datasets, rouge_score" 2>/dev/null; then
  python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  echo "== $(date -u) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  python -c "import transformers; print('transformers', transformers.__version__)" 2>&1 | tail -1
} | tee "$SUMMARY"

echo "== 1. CUDA tests" | tee -a "$SUMMARY"
timeout 100 python -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider 2>&1 | tail -5 | tee -a "$SUMMARY"

echo "== 2. quality, --budget gpu" | tee -a "$SUMMARY"
timeout 400 python benchmarks/quality.py --budget gpu --runs-dir "$RUNS" --md "$OUT_DIR/quality-gpu.md" \
  --json "$OUT_DIR/quality-gpu.json" 2> "$RUNS/quality.log" | tee -a "$SUMMARY"
grep -E "^\[|error|Error" "$RUNS/quality.log" | tail -20 | tee -a "$SUMMARY"

echo "== 3. speed against transformers, CUDA" | tee -a "$SUMMARY"
if python -c "import transformers" 2>/dev/null; then
  timeout 90 python benchmarks/speed.py --device cuda --compile both --rounds 1 --presets small,base \
    --out "$OUT_DIR/speed-cuda.json" 2>&1 | tail -40 | tee -a "$SUMMARY"
else
  echo "transformers is not installed: speed comparison skipped (pip install -e '.[bench]')" | tee -a "$SUMMARY"
fi
echo "== results in $OUT_DIR: $(ls "$OUT_DIR" | tr '\n' ' ')"
