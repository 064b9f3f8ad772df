#!/usr/bin/env bash
# One prepared run on a GPU machine (well under 10 minutes): the GPU tests, then a short
# bf16 training of each task on ../shared/data, printing tokens/s and the validation metric.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]     (results land in OUT_DIR, default $OUT or /tmp)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp/attn-gpu}}
mkdir -p "$OUT_DIR"
SHARED=../shared/data
if ! python -c "import attn_cli" 2>/dev/null; then
  pip install -q torch==2.13.0 2>/dev/null || true
  pip install -q -e ".[dev]"
fi
{
  echo "== $(date -u) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT_DIR/summary.txt"
python -m pytest -m gpu tests/test_gpu.py -q 2>&1 | tail -5 | tee -a "$OUT_DIR/summary.txt"

train() {  # name, budget, then attn train arguments
  local name=$1 budget=$2; shift 2
  echo "== $name ($budget)" | tee -a "$OUT_DIR/summary.txt"
  attn train "$@" --out "$OUT_DIR/$name" --overwrite --device cuda --time-budget "$budget" \
    --eval-every 400 2> "$OUT_DIR/$name.log"
  grep -E "Training finished|steps|time |/s|best validation" "$OUT_DIR/$name.log" | tee -a "$OUT_DIR/summary.txt"
}
train sst2 60s sentiment --data $SHARED/sentiment/sst2 --max-tokens 16384 --compile
train multi30k 150s translate --data $SHARED/translation/multi30k/train \
  --valid $SHARED/translation/multi30k/val --src de --tgt en --max-tokens 16384 --lr 1e-3 --eval-samples 1014
train dialogsum 90s summarize --data $SHARED/summarization/dialogsum --max-tokens 16384 --max-len 512
echo "== results in $OUT_DIR/summary.txt"
cat "$OUT_DIR/summary.txt"
