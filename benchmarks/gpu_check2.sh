#!/usr/bin/env bash
# Second prepared GPU session: trainer throughput, the full gap study, the Gaussian-model
# validation with many realizations, gradient cost. Usage: OUT=dir bash benchmarks/gpu_check2.sh
set -u
export PYTHONPATH=$PWD JAX_ENABLE_X64=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
timeout 60 python3 benchmarks/trainer_throughput.py --seeds 16 --m 64 --d 200 --steps 300 \
    --results "$OUT/trainer_throughput_gpu.md" > "$OUT/tt.log" 2>&1; echo "tt rc=$?"; tail -5 "$OUT/tt.log"
timeout 170 python3 benchmarks/gap_study.py --results "$OUT/gap_study_gpu.md" --figures "$OUT" \
    > "$OUT/gap.log" 2>&1; echo "gap rc=$?"; tail -5 "$OUT/gap.log"
timeout 150 python3 benchmarks/validation_gaussian.py --realizations 1000 --d 50,100,200 \
    --batch-size 250 --report "$OUT/validation_gpu.md" --figure "$OUT/validation_gpu.png" \
    > "$OUT/val.log" 2>&1; echo "val rc=$?"; tail -5 "$OUT/val.log"
timeout 110 python3 benchmarks/grad_cost.py --steps 1024,2048,4096 --out "$OUT/grad_cost_gpu.md" \
    > "$OUT/grad.log" 2>&1; echo "grad rc=$?"; tail -5 "$OUT/grad.log"
