#!/usr/bin/env bash
# One prepared check on a lent GPU machine, meant to fit 5 minutes of device time: each part has
# its own time limit and no part starts past DEADLINE (default 280 s from the start). The times
# below are estimates (from earlier H200 runs of the quality suite and from step times reckoned
# for `base`/`big`); the new `step` stage has not yet been timed on a GPU.
#   step     (default) benchmarks/gpu_step.py: the real Trainer's train_step on synthetic
#            translate batches of 16k/32k/64k padded tokens, `base` and `big`, eager and
#            torch.compile'd: target tokens/s, FLOPs counted by FlopCounterMode, achieved
#            TFLOP/s, MFU against the GPU's dense bf16 peak, GPU busy share (torch.profiler),
#            peak memory, compile seconds (OOM rows go on); limit 190 s, no row starts past its 145th s
#            (estimate: ~10 s base eager, ~60 s base compiled, ~25 s big eager, ~80 s big
#            compiled, plus ~10 s start-up)
#   quality  (default) the GPU-budget quality suite: a short bf16 training of each dataset in
#            TASKS (base preset), its test score and tokens/s (baselines are CPU numbers, not
#            rerun); SST-2 ~55 s on an H200
#   tests    (not default) the CUDA tests (pytest -m gpu): bf16 autocast, fused AdamW, flash SDPA,
#            torch.compile, attn train/translate/eval end to end on cuda (up to ~285 s on an H200)
#   speed    (not default) the speed comparison with Hugging Face transformers on CUDA (bf16, ~130 s)
#   data     (not default) `base` on Tatoeba x10 from the tokenized-data cache in bf16 at
#            --max-tokens 16k/32k/64k, 45 s each: tokens/s, MFU, data-loader wait
#            (benchmarks/data_scale.py --gpu; ~4 min with the corpus build), then the loss's peak
#            memory at 64k tokens (benchmarks/loss_memory.py, ~20 s)
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]          (default $OUT, else /tmp/attn-gpu)
#   STAGES="step quality"          which parts to run (in this order); the others need their own
#                                  call with a larger DEADLINE, e.g. STAGES=tests DEADLINE=330
#   TASKS="sst2"                   quality datasets, in order; more as a separate call:
#                                  TASKS="multi30k dialogsum" STAGES=quality DEADLINE=240 (~215 s)
#   STEP_ARGS=""                   extra gpu_step.py options, e.g. STEP_ARGS="--presets base --modes eager"
#   SPEED_COMPILE=off              speed.py --compile: off, on or both (each compiled worker adds ~30 s)
#   DEADLINE=280                   seconds from the start after which no part starts
#   DATA_ROOT=../shared/data       the datasets; when absent, .gpudata/shared-data.tar.xz (made
#                                  by `benchmarks/gpu_wheels.sh --data`, git-ignored) is unpacked
#                                  (the step stage needs no data)
# Results: OUT_DIR/summary.txt (everything printed), gpu-step.md/.json, quality-gpu.md/.json,
# speed-cuda.json and logs.tar.gz (training logs, metrics.jsonl, hypotheses). Weights stay in
# /tmp/attn-gpu-runs.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
OUT_DIR=${1:-${OUT:-/tmp/attn-gpu}}
STAGES=${STAGES:-step quality}
TASKS=${TASKS:-sst2}
SPEED_COMPILE=${SPEED_COMPILE:-off}
DEADLINE=${DEADLINE:-280}
STEP_ARGS=${STEP_ARGS:-}
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
  step)
    late step && continue
    say "== one training step: base/big, 16k/32k/64k tokens, eager and compiled (gpu_step.py)"
    lim=$(left 190)
    # shellcheck disable=SC2086  # STEP_ARGS is a list of options
    timeout "$lim" "$PY" benchmarks/gpu_step.py --deadline $((lim > 45 ? lim - 45 : 1)) \
      --json "$OUT_DIR/gpu-step.json" $STEP_ARGS > "$OUT_DIR/gpu-step.md" 2> "$RUNS/gpu-step.log"
    rc=$?
    say "rc=$rc"
    tee -a "$SUMMARY" < "$OUT_DIR/gpu-step.md"
    if [ $rc -ne 0 ]; then  # the rows done before a timeout or an error are in the log
      grep -E "^\| " "$RUNS/gpu-step.log" | tee -a "$SUMMARY"
      grep -iE "error|Traceback" "$RUNS/gpu-step.log" | tail -5 | tee -a "$SUMMARY"
    fi
    ;;
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
  *) say "unknown stage $stage (choose from: step quality tests speed data)" ;;
  esac
done
(cd "$RUNS" && tar -czf "$OUT_DIR/logs.tar.gz" --exclude='*.safetensors' --exclude='*.pt' --exclude='_flores' \
  --exclude='*.model' . 2>/dev/null)
say "== done; results in $OUT_DIR: $(ls "$OUT_DIR" | tr '\n' ' ')"
