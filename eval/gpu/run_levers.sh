#!/bin/bash
# SimKGC's levers (issue #27) at the full budget on the GPU box: the `levers` part of
# eval/bench_linkpred_levers.py, i.e. the linkpred_train step of pipelines/linkpred_wordnet.yaml
# (8 epochs of batch 128, MiniLM-L6, test MRR 0.342 in 7.5 min on one H200) with each lever on.
# Device tool, carrying .gpu and .whl made here by eval/gpu/prepare.sh (as eval/gpu/run_linkpred.sh):
#   bash eval/gpu/run_levers.sh              -> $OUT/levers.log, $OUT/linkpred.json, $OUT/levers_runs.tar.gz
# Arms run in ARMS order (default: query_encoder pre_batch margin learn_tau base), seed SEEDS (default 0).
# The call stops itself after LIMIT seconds (default 540, inside the device tool's 600 s): the arm in
# progress gets SIGINT, writes its checkpoint and exits; the same command again on the warm box (setup
# skipped: /tmp/site is there) resumes it, and a finished arm is read back from the runs directory.
# Measured on 2026-12-04 with PARALLEL=1 EPOCHS=2 (one H200, eval/results/linkpred.json "levers"): the
# five arms in 508 s, each epoch ~140 s with five sharing the GPU (48 s alone); SimKGC's literal tau
# 0.05 hurt TransE (0.216 vs the base's 0.306) and pre_batch collapsed. The collapse came back on the
# CPU (bag of words, fp32, tau 0.5 fixed; docs/linkpred.md "Pre-batch negatives"): the queue's
# detached negatives outweighed the batch's own; they now weigh pre_batch_weight (0.05) each, and the
# pre-batch arms name it, so the collapsed record (weight 1) is trained again, not read back. Next
# call, the levers at the base's score scale and the weighted pre_batch beside that base (same
# budget, so they join the same table):
#   ARMS="learn_tau_scaled margin_scaled pre_batch_scaled pre_batch" PARALLEL=1 EPOCHS=2 bash eval/gpu/run_levers.sh
# A full-budget arm (8 epochs) alone takes ~7 min (base), query_encoder about twice that: two calls.
# PARALLEL=1 trains the arms at once, one process each, each into its own result file; the finished ones
# are then gathered into RESULT by one more call of the bench, which only reads them back. A lone arm's
# step of batch 128 leaves the H200 partly idle; five at once kept it 95-100 % busy ($OUT/gpu_load.csv)
# at ~140 s an epoch each: 1.7x the throughput of one arm after another.
# DEVICE, SPLIT and EXTRA (more bench options) let the same script be tried on a CPU first, e.g.
#   DEVICE=cpu SPLIT=/tmp/umls_split EXTRA="--encoder bow --lr 1e-2" EPOCHS=1 PARALLEL=1 SKIP_PIP=1 \
#     PY=.venv/bin/python bash eval/gpu/run_levers.sh
# EPOCHS=N trains N epochs instead (a shorter budget, recorded as such in the JSON; its arms live in
# runs/levers_runs_eN so they never mix with the full-budget runs).
# Then here: python -c "import json; p='eval/results/linkpred.json'; d=json.load(open(p));
#   d['levers']=json.load(open('FETCHED/linkpred.json'))['levers']; json.dump(d, open(p,'w'), indent=2)"
# (or unpack levers_runs.tar.gz into eval/results/ and run the bench there with --runs and --data: the
# finished runs are read back, with the GPU's machine record).
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_MININTERVAL=20
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-python3}
ARMS=${ARMS:-query_encoder pre_batch margin learn_tau base}
SEEDS=${SEEDS:-0}
LIMIT=${LIMIT:-540}
START=$(date +%s)
SPLIT=${SPLIT:-runs/linkpred_wordnet/wordnet_split}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
RUNS=runs/levers_runs${EPOCHS:+_e$EPOCHS}
RESULT=runs/levers_linkpred.json
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
source eval/gpu/setup.sh  # wheels, MiniLM restored to fp32; once per box
mkdir -p runs/linkpred_wordnet "$RUNS"
[ -f $SPLIT/build.json ] || [ "$SPLIT" != runs/linkpred_wordnet/wordnet_split ] || tar -C runs/linkpred_wordnet -xJf .gpu/wordnet_split.tar.xz || exit 5
[ -f $RESULT ] || cp eval/results/linkpred.json $RESULT || exit 5
echo "setup took $(( $(date +%s) - START )) s"
bench() {  # the bench's arguments for the arms given
  echo --part levers --arms "$@" --seeds $SEEDS --device $DEVICE --data $SPLIT --runs $RUNS ${EPOCHS:+--epochs $EPOCHS} $EXTRA
}
if [ -n "${PARALLEL:-}" ]; then
  # every arm at once, each in its own result file; GPU load sampled beside them
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 15 > "$OUT/gpu_load.csv" 2>/dev/null &
  load=$!
  left=$(( LIMIT - ($(date +%s) - START) - 45 )) pids=  # 45 s kept for the gathering call
  for arm in $ARMS; do
    echo "== $arm ($left s left, in parallel)"
    OMP_NUM_THREADS=3 timeout -s INT -k 30 $left $PY eval/bench_linkpred_levers.py $(bench $arm) \
      --out runs/levers_parallel_$arm.json > runs/levers_parallel_$arm.log 2>&1 &
    pids="$pids $!"
  done
  wait $pids
  kill $load 2>/dev/null
  for arm in $ARMS; do echo "=== $arm"; cat runs/levers_parallel_$arm.log; done >> "$OUT/levers.log"
  done_arms=$(for arm in $ARMS; do for s in $SEEDS; do [ -f $RUNS/${arm}_seed$s/test_metrics.json ] || continue 2; done
                                   echo $arm; done)
  echo "finished:" ${done_arms:-none}
  [ -z "$done_arms" ] || timeout -s INT 60 $PY eval/bench_linkpred_levers.py $(bench $done_arms) --out $RESULT \
    >> "$OUT/levers.log" 2>&1
else
  # one arm at a time, each bounded by what is left of LIMIT: whatever finishes is in $RESULT at once
  for arm in $ARMS; do
    left=$(( LIMIT - ($(date +%s) - START) ))
    [ $left -gt 30 ] || { echo "no time left for $arm"; break; }
    echo "== $arm ($left s left)"
    timeout -s INT -k 30 $left $PY eval/bench_linkpred_levers.py $(bench $arm) --out $RESULT >> "$OUT/levers.log" 2>&1
    echo "exit $? after $(( $(date +%s) - START )) s"
  done
fi
cp $RESULT "$OUT/linkpred.json"
# the small files of every run (no weights): enough for the bench to read the finished ones back
(cd $(dirname $RUNS) && find $(basename $RUNS) -maxdepth 2 \( -name '*_seed*.json' -o -name test_metrics.json \
  -o -name metrics.jsonl \) -print0 | tar --null -czf "$OUT/levers_runs.tar.gz" -T -)
for f in $RUNS/*/metrics.jsonl; do
  [ -f "$f" ] || continue
  echo "-- $f"
  $PY -c "
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line); print(r['epoch'], round(r['loss'], 4), r.get('metric'), r.get('tau'), r['train_seconds'])" "$f"
done
grep -E '^(==|arm  |[a-z_]+ +[0-9]+ +[0-9.]+ )' "$OUT/levers.log" | tail -7  # the last table
echo "total $(( $(date +%s) - START )) s"
