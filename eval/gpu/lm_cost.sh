#!/bin/bash
# eval/bench_lm_cost.py on a GPU box with no network: LM stages at 1B and 7B (random-weight Llama
# shapes built on the GPU from their configs; only SmolLM2's tokenizer travels).
#
# 1. Here, once (needs `make install`; the wheels need the package index):
#      bash eval/gpu/lm_cost.sh prepare
#    -> .gpu/smollm2_tokenizer/  SmolLM2's tokenizer files (tokenizer.json, tokenizer_config.json; ~3.5 MB)
#       .whl/                    wheels of kgprobe's pure-Python needs the box may lack (pydantic, rdflib, ...)
#    both kept out of git (.git/info/exclude).
# 2. On the GPU box (device tool: carry [".gpu/smollm2_tokenizer", ".whl"], timeout_s 600):
#      bash eval/gpu/lm_cost.sh                       -> $OUT/lm_cost.json, $OUT/lm_cost.log
#      bash eval/gpu/lm_cost.sh --parts scan,linkpred  (any bench_lm_cost.py options pass through)
#    LIMIT (default 540) caps the whole benchmark in seconds, DEADLINE (default 470) is when it starts
#    no new part; every part writes the JSON when it ends, so a stopped run keeps the finished parts.
#    Expected: ~3-5 min on an H200 (model builds are seconds; the 7B unlearning step needs ~60 GB).
# 3. Here: python eval/bench_lm_cost.py --add FILES_AT/lm_cost.json   (merged under runs["gpu:NAME"])
set -u
if [ "${1:-}" = prepare ]; then
  set -e
  PY=${PY:-.venv/bin/python}
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qx '/.whl/' "$exclude" 2>/dev/null || printf '/.whl/\n' >> "$exclude"
  grep -qx '/.gpu/' "$exclude" 2>/dev/null || printf '/.gpu/\n' >> "$exclude"
  src=$(HF_HUB_OFFLINE=1 $PY -c "from kgprobe.models import model_source; print(model_source('smollm2-135m'))" | tail -1)
  rm -rf .gpu/smollm2_tokenizer && mkdir -p .gpu/smollm2_tokenizer
  for f in tokenizer.json tokenizer_config.json special_tokens_map.json; do
    [ -f "$src/$f" ] && cp "$src/$f" .gpu/smollm2_tokenizer/
  done
  mkdir -p .whl
  # the same wheels as eval/gpu/prepare.sh (cp312, manylinux): what run_linkpred.sh found missing on the box
  for spec in pydantic pydantic_core annotated-types typing-inspection typing_extensions rdflib; do
    version=$($PY -c "import importlib.metadata as m; print(m.version('$spec'))")
    ls .whl/ 2>/dev/null | grep -qi "^$(echo "$spec" | tr '-' '_')-$version-" && continue
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$spec==$version" || echo "WARNING: could not download $spec==$version (no index?)"
  done
  du -sh .gpu/smollm2_tokenizer .whl
  exit 0
fi

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-}
PY=${PY:-python3}
START=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi: not found or failed"
if ! command -v "$PY" > /dev/null; then echo "MISSING: no $PY on this machine (set PY=...)"; exit 2; fi
$PY --version
cuda=$($PY -c "import torch; print(torch.cuda.is_available())" 2>&1 | tail -1)
echo "torch.cuda.is_available(): $cuda"
if [ "$cuda" != True ]; then
  $PY -c "import torch; print('torch', torch.__version__, 'built for CUDA', torch.version.cuda)" 2>&1 | tail -1
  echo "MISSING: a torch that sees a CUDA GPU (the benchmark would run its CPU shapes: not what this is for)"
  exit 2
fi
# kgprobe's pure-Python needs from the carried wheels, into /tmp/site (only where the box lacks them)
mkdir -p /tmp/site
if ls .whl/*.whl > /dev/null 2>&1; then
  $PY -c "import pydantic, rdflib" 2>/dev/null || \
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || echo "WARNING: pip install of .whl/ failed"
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
missing=""
for mod in torch transformers tokenizers numpy yaml tqdm pydantic rdflib; do
  $PY -c "import $mod" 2>/dev/null || missing="$missing $mod"
done
if [ -n "$missing" ]; then
  echo "MISSING python modules:$missing"
  echo "  (pydantic, rdflib: run 'bash eval/gpu/lm_cost.sh prepare' here and carry .whl; the others must be on the box)"
  case " $missing " in *" transformers "*|*" tokenizers "*|*" numpy "*) exit 3;; esac
  echo "  going on: the parts that need them record the ImportError"
fi
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
torch.cuda.get_device_name(), round(torch.cuda.mem_get_info()[1] / 2**30), 'GiB')"
TOK=.gpu/smollm2_tokenizer
if [ ! -f $TOK/tokenizer.json ]; then
  echo "MISSING: $TOK/tokenizer.json (run 'bash eval/gpu/lm_cost.sh prepare' here, carry .gpu/smollm2_tokenizer)"
  exit 4
fi
dest=${OUT:+$OUT/lm_cost.json}
log=${OUT:+$OUT/lm_cost.log}
[ -n "$OUT" ] && mkdir -p "$OUT"
echo "setup took $(( $(date +%s) - START )) s"
timeout -s INT -k 20 "${LIMIT:-540}" $PY eval/bench_lm_cost.py --tokenizer $TOK --deadline-s "${DEADLINE:-470}" \
  ${dest:+--out "$dest"} "$@" 2>&1 | tee ${log:-/dev/null}
rc=${PIPESTATUS[0]}
echo "bench_lm_cost.py exit $rc; total $(( $(date +%s) - START )) s; result: ${dest:-eval/results/lm_cost.json}"
exit "$rc"
