#!/usr/bin/env bash
# Run HERE (where pip reaches a registry) before a GPU check: downloads into .whl/ the wheels
# that the GPU machines' image lacks (datasets, rouge-score and what they need beyond that
# image: dill, multiprocess, nltk, defusedxml), for Python 3.12 on x86-64. Carry `.whl` with the
# device call; gpu_check.sh installs them into /tmp/site. .whl/ is git-ignored.
#   --data   also pack the files of ../shared/data that gpu_check.sh reads into
#            .gpudata/shared-data.tar.xz (~33 MB): only the checkout travels to the device, not
#            ../shared. Carry `.gpudata` too. Add `/.gpudata/` to .git/info/exclude; never commit it.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
for pkg in datasets==5.2.0 dill multiprocess nltk defusedxml; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $plat --platform any -d .whl "$pkg" 2>/dev/null \
  || python3 -m pip download -q --no-deps --python-version 3.12 --implementation cp $plat --platform any \
    -d .whl "$pkg"
done
# rouge-score 0.1.2 exists only as an sdist; `pip download --only-binary` would fetch an unrelated
# 0.0.4 wheel (no RougeScorer.score_multi), so build the 0.1.2 wheel here (pure Python).
rm -f .whl/rouge_score-0.0.*
python3 -m pip wheel -q --no-deps -w .whl rouge-score==0.1.2
ls -la .whl
if [ "${1:-}" = "--data" ]; then
  mkdir -p .gpudata
  m=data/translation/multi30k
  (cd ../shared && tar -cJf "$OLDPWD/.gpudata/shared-data.tar.xz" $m/train.de $m/train.en $m/val.de $m/val.en \
    $m/test_2016_flickr.de $m/test_2016_flickr.en data/translation/tatoeba-it-en data/sentiment \
    data/summarization)
  ls -la .gpudata
fi
