# Sourced on the lent GPU machine after scripts/gpu_setup.sh: installs flash-attn 4's wheel set (made here by
# scripts/gpu_fa4_wheels.sh, carried as .gpu-fa4/part.00, part.01 one per call) into /tmp/site_fa4, once per
# machine (install_piece_set, gpu_setup.sh). It does not touch PYTHONPATH: a process that uses FA4 puts
# $FA4_SITE_PATH first itself (FA4_PYTHONPATH below), so vLLM and everything else keep the bundle's cutlass-dsl.
# FA4_PARTS: the set's pieces (2 as built on 2026-12-04).
if [ ! -f /tmp/site_fa4/.installed ]; then
  install_piece_set fa4 .gpu-fa4 /tmp/site_fa4 "${FA4_PARTS:-2}" && touch /tmp/site_fa4/.installed \
    || { echo "gpu_fa4_setup: not installed"; return 1 2>/dev/null || exit 1; }
fi
# cutlass-dsl puts its `cutlass` package on sys.path from a .pth file, and Python reads .pth files only in site
# directories, never in PYTHONPATH entries: so its dsl_packages folder is named here (found missing on the H200).
export FA4_SITE_PATH="/tmp/site_fa4/nvidia_cutlass_dsl/dsl_packages:/tmp/site_fa4"
export FA4_PYTHONPATH="$FA4_SITE_PATH:$PYTHONPATH"
PYTHONPATH="$FA4_PYTHONPATH" python3 -c "import importlib.metadata as m, cutlass, flash_attn.cute; print('flash-attn-4', m.version('flash-attn-4'), 'nvidia-cutlass-dsl', m.version('nvidia-cutlass-dsl'))"
