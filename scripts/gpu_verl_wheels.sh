#!/usr/bin/env bash
# verl 0.9.1 for the lent GPU machine (Python 3.12, x86-64, torch 2.11 and the image's packages; no
# package index there): the wheels verl needs that neither the image, the GPU vLLM bundle
# (../shared/gpu-vllm/wheels.txt) nor .whl/ (scripts/gpu_wheels.sh) holds, cut into 56 MiB pieces in
# .gpu-verl/ (ignored by git). Carry .gpu-verl/part.00, part.01, ... one per call like the vLLM pieces;
# scripts/gpu_verl_setup.sh installs them there into /tmp/site_verl.
#   bash scripts/gpu_verl_wheels.sh        # from the project root; prints the pieces and what it left out
#
# How the set is found: pip resolves verl's dependencies that do not depend on torch for Python 3.12
# on manylinux (the torch-dependent ones, torchdata and tensordict, come with --no-deps: resolving
# torch here fails, its CUDA 13 wheels are not on this machine's index), then every distribution the
# image or the other two sets already have is dropped. Pure-Python packages published only as sdists
# (antlr4-python3-runtime, hydra-core's parser runtime) are built into wheels here first. TransferQueue also
# needs tensordict, so it comes without its dependencies too.
#
# Left out, and why (what a verl run there must live with or work around):
#   flash-attn 2.8.3   verl's fsdp extra; PyPI has only its sdist, which compiles CUDA code against the
#                      GPU machine's torch (no compiler toolchain or time for that there). verl runs
#                      with attn_implementation sdpa; its remove-padding path may need flash_attn's
#                      bert_padding helpers (to be seen on the GPU).
#   transformers       verl pins >=5.5.3,<5.11; the image has 5.17.0, which the rest of the project uses.
#                      The set carries transformers 5.10.x into /tmp/site_verl_tf for a run that needs
#                      the pin (put it first on PYTHONPATH for the verl process only).
#   vllm 0.24.0        verl's vllm extra pin; the vLLM bundle is 0.26.0, tried first.
# In: TransferQueue (verl's verl-core extra; its v1 trainer imports transfer_queue: without it main_ppo
# stops at "No module named 'transfer_queue'", seen on the H200 on 2026-12-02).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu-verl/' .git/info/exclude 2>/dev/null || echo '/.gpu-verl/' >> .git/info/exclude
PY=${PYTHON:-.venv/bin/python}
out=.gpu-verl
rm -rf "$out" && mkdir -p "$out/w" "$out/tf"
plats=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
       --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
target=(--only-binary=:all: --python-version 3.12 --implementation cp "${plats[@]}")
# 1. sdist-only pure-Python packages, as wheels
"$PY" -m pip wheel -q --no-deps -w "$out/built" antlr4-python3-runtime==4.9.3
# 2. verl itself and the torch-dependent packages, without their dependencies
"$PY" -m pip download -q --no-deps "${target[@]}" -d "$out/w" verl==0.9.1 "tensordict>=0.8,<=0.10,!=0.9.0" torchdata \
  "TransferQueue>=0.1.10"
# 3. the rest of verl's dependencies (and TransferQueue's: msgspec, pyzmq, prometheus_client), resolved
#    (numpy as the image's)
printf 'numpy==2.5.2\n' > "$out/constraints.txt"
"$PY" -m pip install -q --dry-run --ignore-installed --ignore-requires-python --report "$out/report.json" "${target[@]}" \
  --find-links "$out/built" --target "$out/t" -c "$out/constraints.txt" \
  "ray[default]>=2.41" "hydra-core>=1.3" codetiming wandb pylatexenc "pyarrow>=19" cachetools msgspec pyzmq "prometheus_client>=0.20" \
  importlib_metadata orjson "pyvers>=0.1,<0.2"  # the last three: tensordict's
"$PY" - "$out" <<'EOF'
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
# what the GPU machine already has: the image (../.library/device/KINDS.md, read 2026-11-17), the vLLM
# bundle and .whl/
image = set(norm(n) for n in re.search(r"Packages: (.*)\.", Path("../.library/device/KINDS.md").read_text()).group(1).split(", "))
bundle = {norm(l.split("==")[0]) for l in Path("../shared/gpu-vllm/wheels.txt").read_text().split() if "==" in l}
whl = {norm(p.name.split("-")[0]) for p in Path(".whl").glob("*.whl")}
have = image | bundle | whl
wanted, skipped = [], []
for item in json.loads((out / "report.json").read_text())["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    (skipped if norm(name) in have else wanted).append(f"{name}=={version}")
(out / "wanted.txt").write_text("\n".join(sorted(wanted)) + "\n")
print(f"{len(wanted)} to carry; {len(skipped)} already there: {' '.join(sorted(skipped))}")
EOF
"$PY" -m pip download -q --no-deps "${target[@]}" --find-links "$out/built" -d "$out/w" -r "$out/wanted.txt"
cp "$out"/built/*.whl "$out/w/"
# with the tokenizers it accepts (<=0.23.0; the image has 0.23.2, which transformers 5.10 refuses at import)
"$PY" -m pip download -q --no-deps "${target[@]}" -d "$out/tf" "transformers>=5.10,<5.11" "tokenizers>=0.22,<=0.23.0"
mv "$out/tf" "$out/w/tf"
(cd "$out" && tar cf - w | split -b 56M -d - part.)
echo "$(find "$out/w" -name '*.whl' | wc -l) wheels, $(du -sh "$out/w" | cut -f1), pieces:"
ls "$out"/part.*
