# Sourced on the lent GPU machine after scripts/gpu_setup.sh: installs verl's wheel set (made here by
# scripts/gpu_verl_wheels.sh, carried as .gpu-verl/part.00 .. part.NN one per call) into /tmp/site_verl, once per
# machine (install_piece_set, gpu_setup.sh), and puts it on PYTHONPATH after the project's own /tmp/site.
# transformers 5.10 (verl's pin; the image has 5.17) goes to /tmp/site_verl_tf: prepend it for a verl
# process that needs the pin. VERL_PARTS: how many pieces the set has (3 as built on 2026-12-02).
if [ ! -f /tmp/site_verl/.installed ]; then
  install_piece_set verl .gpu-verl /tmp/site_verl "${VERL_PARTS:-3}" \
    && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_verl_tf /tmp/verl_x/w/tf/*.whl \
    && touch /tmp/site_verl/.installed || { echo "gpu_verl_setup: not installed"; return 1 2>/dev/null || exit 1; }
fi
export PYTHONPATH="$PYTHONPATH:/tmp/site_verl"
python3 -c "import verl, ray, tensordict, hydra; print('verl', verl.__version__, 'ray', ray.__version__, 'tensordict', tensordict.__version__)"
