#!/usr/bin/env bash
# One prepared run on a GPU machine, under 10 minutes in all (each part has its own time limit,
# and no part starts past the deadline):
#   tests    the CUDA tests (pytest -m gpu): bf16 autocast, fused AdamW, flash SDPA, torch.compile,
#            and attn train/translate/eval end to end on cuda;
#   quality  the GPU-budget quality suite: a short bf16 training of each dataset (base preset,
#            25-60 s each), its test score and tokens/s (baselines are CPU numbers, not rerun);
#   speed    the speed comparison with Hugging Face transformers on CUDA (bf16);
#   data     (not in the default STAGES) `base` on Tatoeba x10 from the tokenized-data cache in
#            bf16 at --max-tokens 16k/32k/64k, 45 s each: tokens/s, MFU, data-loader wait
#            (benchmarks/data_scale.py --gpu; ~4 min with the corpus build), then the loss's peak
#            memory at 64k tokens (benchmarks/loss_memory.py, ~20 s): STAGES=data
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]          (default $OUT, else /tmp/attn-gpu)
#   STAGES="tests speed quality"   which parts to run (in this order)
#   TASKS="sst2"                   quality datasets, in order. On an H200 the 9 CUDA tests take
#                                  up to ~285 s (the compiled CLI test alone ~100 s), speed ~130 s
#                                  and SST-2 ~55 s: the default fits 540 s. Run the other datasets
#                                  as a second call: TASKS="multi30k dialogsum" STAGES=quality (~215 s),
#                                  TASKS="imdb tatoeba" STAGES=quality (~240 s)
#   SPEED_COMPILE=off              speed.py --compile: off, on or both (each compiled worker adds ~30 s)
#   DEADLINE=540                   seconds from the start after which no part starts
#   DATA_ROOT=../shared/data       the datasets; when absent, .gpudata/shared-data.tar.xz (made
#                                  by `benchmarks/gpu_wheels.sh --data`, git-ignored) is unpacked
# Results: OUT_DIR/summary.txt (everything printed), quality-gpu.md/.json, speed-cuda.json and
# logs.tar.gz (training logs, metrics.jsonl, hypotheses). Weights stay in /tmp/attn-gpu-runs.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
OUT_DIR=${1:-${OUT:-/tmp/attn-gpu}}
STAGES=${STAGES:-tests speed quality}
TASKS=${TASKS:-sst2}
SPEED_COMPILE=${SPEED_COMPILE:-off}
DEADLINE=${DEADLINE:-540}
DATA_ROOT=${DATA_ROOT:-../shared/data}
PY=${PYTHON:-python3}  # the GPU image has python3 (with torch), not always python
RUNS=/tmp/attn-gpu-runs
mkdir -p "$OUT_DIR" "$RUNS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
SUMMARY="$OUT_DIR/summary.txt"
say() { echo "[$((SECONDS - START))s] $*" | tee -a "$SUMMARY"; }
# left LIMIT: LIMIT, or less when the deadline is nearer (at least 1)
left() { local l=$((DEADLINE - (SECONDS - START))); [ "$l" -lt "$1" ] && echo $((l > 1 ? l : 1)) || echo "$1"; }
late() { [ $((SECONDS - START)) -ge "$DEADLINE" ] && say "deadline reached: $1 skipped"; }

# A bare GPU machine has torch, transformers, typer, rich, sentencepiece, safetensors and sacrebleu
# but not datasets or rouge-score (nor their dill, multiprocess, nltk, defusedxml), and no network:
# benchmarks/gpu_wheels.sh (run beforehand where pip works) puts those wheels in .whl/, which the
# device call carries. attn_cli runs from this checkout (PYTHONPATH), not an installed copy.
if [ -d .whl ] && ! "$PY" -c "import datasets, rouge_score" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -d "$DATA_ROOT" ] && [ -f .gpudata/shared-data.tar.xz ]; then
  mkdir -p /tmp/attn-shared && tar -xJf .gpudata/shared-data.tar.xz -C /tmp/attn-shared
  DATA_ROOT=/tmp/attn-shared/data
fi
{
  echo "== $(date -u) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  "$PY" -c "import transformers, datasets, pyarrow; print('transformers', transformers.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__)" 2>&1 | tail -1
  "$PY" -c "import attn_cli.cli.main, attn_cli.eval.metrics; from rouge_score.rouge_scorer import RougeScorer; print('attn_cli', attn_cli.__version__, 'imports ok')" 2>&1 | tail -1
  echo "data: $DATA_ROOT $(ls "$DATA_ROOT" 2>&1 | tr '\n' ' ')"
} | tee -a "$SUMMARY"

for stage in $STAGES; do
  case $stage in
  tests)
    late tests && continue
    say "== CUDA tests"
    timeout "$(left 330)" "$PY" -m pytest -m gpu tests/integration/test_gpu.py -p no:cacheprovider -p no:warnings -rfEs 2>&1 | tail -30 | tee -a "$SUMMARY"
    ;;
  quality)
    jsons=()
    for t in $TASKS; do
      late "quality $t" && continue
      say "== quality $t (--budget gpu)"
      timeout "$(left 180)" "$PY" benchmarks/quality.py --budget gpu --tasks "$t" --no-baselines \
        --data-root "$DATA_ROOT" --runs-dir "$RUNS" --md - --json "$RUNS/quality-$t.json" \
        > "$RUNS/quality-$t.out" 2> "$RUNS/quality-$t.log"
      rc=$?
      [ $rc -eq 124 ] && pkill -f "attn_cli (train|eval)" 2>/dev/null  # timeout stops quality.py only
      say "rc=$rc $(grep -E '^\| ' "$RUNS/quality-$t.out" | tail -1)"
      grep -iE "error|Traceback" "$RUNS/quality-$t.log" | tail -5 | tee -a "$SUMMARY"
      [ -f "$RUNS/quality-$t.json" ] && jsons+=("$RUNS/quality-$t.json")
    done
    if [ ${#jsons[@]} -gt 0 ]; then
      "$PY" benchmarks/quality.py --budget gpu --report "${jsons[@]}" --md "$OUT_DIR/quality-gpu.md" \
        --json "$OUT_DIR/quality-gpu.json" 2>&1 | tee -a "$SUMMARY"
    fi
    ;;
  speed)
    late speed && continue
    say "== speed against transformers, CUDA"
    if "$PY" -c "import transformers" 2>/dev/null; then
      timeout "$(left 150)" "$PY" benchmarks/speed.py --device cuda --compile "$SPEED_COMPILE" --rounds 1 --presets base \
        --out "$OUT_DIR/speed-cuda.json" 2>&1 | tail -40 | tee -a "$SUMMARY"
    else
      say "transformers is not installed: speed comparison skipped (pip install -e '.[bench]')"
    fi
    ;;
  data)
    late data && continue
    say "== data path at scale: base on Tatoeba x10, bf16, --max-tokens 16k/32k/64k"
    timeout "$(left 420)" "$PY" benchmarks/data_scale.py --no-scales --gpu --work "$RUNS/data-scale" \
      --data-root "$DATA_ROOT" \
      2>&1 | grep -E "^gpu|Error|error" | tee -a "$SUMMARY"
    say "== training loss memory: chunked linear cross-entropy against full logits (base, 64k tokens, 32k pieces)"
    timeout "$(left 90)" "$PY" benchmarks/loss_memory.py --device cuda --preset base --tokens 65536 \
      --batch 2048 --vocab 32000 2>&1 | tail -3 | tee -a "$SUMMARY"
    ;;
  *) say "unknown stage $stage (choose from: tests quality speed data)" ;;
  esac
done
(cd "$RUNS" && tar -czf "$OUT_DIR/logs.tar.gz" --exclude='*.safetensors' --exclude='*.pt' --exclude='_flores' \
  --exclude='*.model' . 2>/dev/null)
say "== done; results in $OUT_DIR: $(ls "$OUT_DIR" | tr '\n' ' ')"
