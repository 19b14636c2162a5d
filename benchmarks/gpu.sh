#!/usr/bin/env bash
# quasirl on one GPU (H100/H200), in under 8 minutes:
#   1. the GPU kernels against the same kernels on the host CPU (relative error, float32);
#   2. the measured ceilings (copy bandwidth, matmul rate, exp rate) of the GPU;
#   3. B1 (10^6-state gridworld, 32 temperatures, H = 1000, forward and forward-backward),
#      B3 (Eigen's model, L = 26, 28, 30) and B4 (max-plus / log-space / exp-space kernels);
#   4. a short table, last.
# Usage:  bash benchmarks/gpu.sh [OUT_DIR]
# Dry run on a CPU at tiny sizes:  JAX_PLATFORMS=cpu QUASIRL_BENCH_SMALL=1 bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${1:-benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M)}
SMALL=${QUASIRL_BENCH_SMALL:-0}
mkdir -p "$OUT"
T0=$(date +%s)
"$PY" -c 'import jax; d = jax.devices()[0]; print("device:", d.platform, getattr(d, "device_kind", d))'
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

status=0
echo "== 1. GPU vs CPU =="
if [ "$SMALL" = 1 ]; then
    timeout 120 "$PY" -m benchmarks.gpu_check --out "$OUT" --small || status=1
else
    timeout 150 "$PY" -m benchmarks.gpu_check --out "$OUT" || status=1
fi

echo "== 2-3. ceilings, B1, B4, B3 =="
if [ "$SMALL" = 1 ]; then
    ARGS=(--quick --only B1,B4,B3 --b3-sizes 8,9,10)
    LIMIT=240
else
    ARGS=(--only B1,B4,B3 --b3-sizes 26,28,30 --numpy-steps 5 --fb-horizon 20)
    LIMIT=$((470 - ($(date +%s) - T0)))
fi
timeout "$LIMIT" "$PY" -m benchmarks "${ARGS[@]}" --out "$OUT" --no-plot > "$OUT/run.log" 2>&1 \
    || { status=1; echo "(runner exited non-zero or hit the time limit; see $OUT/run.log)"; }
tail -n 4 "$OUT/run.log"

echo "== summary ($(( $(date +%s) - T0 )) s) =="
"$PY" -m benchmarks.summary "$OUT"
exit $status
