#!/bin/bash
# SimKGC's levers (issue #27) at the full budget on the GPU box: the `levers` part of
# eval/bench_linkpred_levers.py, i.e. the linkpred_train step of pipelines/linkpred_wordnet.yaml
# (8 epochs of batch 128, MiniLM-L6, test MRR 0.342 in 7.5 min on one H200) with each lever on.
# Device tool, carrying .gpu and .whl made here by eval/gpu/prepare.sh (as eval/gpu/run_linkpred.sh):
#   bash eval/gpu/run_levers.sh              -> $OUT/levers.log, $OUT/linkpred.json, $OUT/levers_runs.tar.gz
# Arms run in ARMS order, default the likeliest to reach MRR 0.45 first: query_encoder, then pre_batch
# (then margin, learn_tau, base), seed SEEDS (default 0). The call stops itself after LIMIT seconds
# (default 540, inside the device tool's 600 s): the arm in progress gets SIGINT, writes its checkpoint
# and exits; the same command again on the warm box (setup skipped: /tmp/site is there) resumes it, and
# a finished arm is read back from runs/levers_runs, not retrained. Timings to expect (estimates from the
# 7.5 min base run; not measured): pre_batch about as long as base, ~8 min, one call; query_encoder
# encodes a query text beside every entity text, about twice base's encoder work, ~13 min: two calls.
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
SPLIT=runs/linkpred_wordnet/wordnet_split
RUNS=runs/levers_runs${EPOCHS:+_e$EPOCHS}
RESULT=runs/levers_linkpred.json
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
source eval/gpu/setup.sh  # wheels, MiniLM restored to fp32; once per box
mkdir -p runs/linkpred_wordnet "$RUNS"
[ -f $SPLIT/build.json ] || tar -C runs/linkpred_wordnet -xJf .gpu/wordnet_split.tar.xz || exit 5
[ -f $RESULT ] || cp eval/results/linkpred.json $RESULT || exit 5
echo "setup took $(( $(date +%s) - START )) s"
# one arm at a time, each bounded by what is left of LIMIT: whatever finishes is in $RESULT at once
for arm in $ARMS; do
  left=$(( LIMIT - ($(date +%s) - START) ))
  [ $left -gt 30 ] || { echo "no time left for $arm"; break; }
  echo "== $arm ($left s left)"
  timeout -s INT -k 30 $left $PY eval/bench_linkpred_levers.py --part levers --arms $arm --seeds $SEEDS \
    --device cuda --data $SPLIT --runs $RUNS --out $RESULT ${EPOCHS:+--epochs $EPOCHS} >> "$OUT/levers.log" 2>&1
  echo "exit $? after $(( $(date +%s) - START )) s"
done
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
