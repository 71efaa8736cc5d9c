#!/usr/bin/env bash
# One prepared GPU session (device time is scarce): solver scaling, then the core tests on GPU.
# Usage on the GPU machine: OUT=dir bash benchmarks/gpu_check.sh
set -u
export PYTHONPATH=$PWD JAX_ENABLE_X64=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
nvidia-smi -L
python3 -c "import jax, equinox, optax; print('jax', jax.__version__, jax.devices(), 'eqx', equinox.__version__)"
timeout 330 python3 benchmarks/solver_scaling.py --sizes 1024,2048,4096,8192 --numpy-max 1024 \
    --numpy-mem-max 0 --repeats 2 --json "$OUT/scaling_gpu.jsonl" 2>&1 | tee "$OUT/scaling_gpu.md"
timeout 150 python3 -m pytest tests/test_dmft.py -q -x -p no:cacheprovider 2>&1 | tail -5 | tee "$OUT/tests_gpu.txt"
