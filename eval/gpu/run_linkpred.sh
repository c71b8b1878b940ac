#!/bin/bash
# On the GPU box (device tool, carry .gpu and .whl made by eval/gpu/prepare.sh):
#   bash eval/gpu/run_linkpred.sh                       -> $OUT/linkpred_wordnet/{pipeline.log,metrics.jsonl,...}
#   PIPELINES="a.yaml b.yaml" bash eval/gpu/run_linkpred.sh
# The default pipeline (8 epochs) trains and validates in about 470 s on an H200 and tests in 40 s:
# PIPE_LIMIT=540 fits it in one call; one stopped by the limit goes on in the next call on the warm
# box (SKIP_CUDA_TESTS=1 PIPE_LIMIT=200 bash eval/gpu/run_linkpred.sh).
# runs the CUDA tests, then the pipelines one after another, and copies each one's pipeline.log, metrics.jsonl,
# test_metrics.json and run.json to $OUT/<pipeline name>/, with candidates.json from
# eval/bench_candidates.py (test MRR against WN18RR-sized candidate sets) once a run has finished.
# (Three run side by side on one H200 went about 25x slower each, 2 batches/s instead of 47: not
# worth it for a model that leaves the GPU idle.)
# Then here: copy those into eval/results/wordnet_inductive/<name>/ and run
#   python eval/bench_linkpred.py --part b
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_MININTERVAL=20
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-python3}
PIPELINES=${PIPELINES:-pipelines/linkpred_wordnet.yaml}
START=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
source eval/gpu/setup.sh
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
# each pipeline's out_dir gets the split (its build_dataset step finds build.json and reuses it)
declare -A DIRS
for p in $PIPELINES; do
  dir=$($PY -c "import yaml, sys; c = yaml.safe_load(open(sys.argv[1])); print(c['name'], c['out_dir'])" "$p") || exit 5
  set -- $dir; DIRS[$p]="$1 $2"
  mkdir -p "$2" && [ -f "$2/wordnet_split/build.json" ] || tar -C "$2" -xJf .gpu/wordnet_split.tar.xz || exit 5
done
echo "setup took $(( $(date +%s) - START )) s"
# the CUDA-only tests first (trainer and evaluator on the GPU against the CPU; ~30 s): a broken
# GPU path stops here instead of after minutes of training. SKIP_CUDA_TESTS=1 skips them.
if [ -z "${SKIP_CUDA_TESTS:-}" ]; then
  $PY -m pytest -q -x -p no:cacheprovider tests/test_linkpred_train.py tests/test_linkpred_eval.py -k cuda \
    > "$OUT/cuda_tests.log" 2>&1 || { tail -30 "$OUT/cuda_tests.log"; exit 6; }
  tail -1 "$OUT/cuda_tests.log"
fi
# PIPE_LIMIT: seconds each pipeline may run (resumable: the next call continues it on a warm box)
for p in $PIPELINES; do
  set -- ${DIRS[$p]}; mkdir -p "$OUT/$1"
  timeout -s INT -k 20 ${PIPE_LIMIT:-480} $PY -m kgprobe run "$p" > "$OUT/$1/pipeline.log" 2>&1
done
echo "pipelines ended after $(( $(date +%s) - START )) s"
for p in $PIPELINES; do
  set -- ${DIRS[$p]}; name=$1; dir=$2
  echo "== $name"
  tr '\r' '\n' < "$OUT/$name/pipeline.log" | grep -v '^\s*$' | grep -v 'it/s\]$' | tail -6
  run=$($PY -c "import yaml, sys; c = yaml.safe_load(open(sys.argv[1])); print([s['out'] for s in c['steps'] if s['type'] == 'linkpred_train'][0])" "$p")
  cp "$dir/$run/metrics.jsonl" "$dir/$run/test_metrics.json" "$dir/run.json" "$OUT/$name/" 2>/dev/null
  # test MRR among all 117,659 synsets and among WN18RR-sized candidate sets (BLP's setting), once trained
  [ -f "$dir/$run/test_metrics.json" ] && timeout 120 $PY eval/bench_candidates.py "$dir/$run" \
    --data "$dir/wordnet_split" --out "$OUT/$name/candidates.json" > /dev/null 2>&1
  $PY -c "
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line); print(r['epoch'], round(r['loss'], 4), r.get('metric'), r['train_seconds'], r['seconds'])" "$dir/$run/metrics.jsonl" 2>/dev/null
  $PY -c "import json, sys; m = json.load(open(sys.argv[1])); print('TEST MRR', m['both.realistic.mrr'], 'H@10', m['both.realistic.hits_at_10'])" "$dir/$run/test_metrics.json" 2>/dev/null
done
echo "total $(( $(date +%s) - START )) s"
