#!/usr/bin/env bash
# The forward / generate / train benchmarks of the three backends and the reference, on a CUDA GPU, whenever a
# machine with one is available (never part of CI). Record the figures and the device in bench/RESULTS.md.
#
#   bash bench/gpu.sh              # every benchmark, full size; logs in out/gpu-bench-DATE/
#   bash bench/gpu.sh --quick      # the same with each script's --quick (a smoke run)
#   bash bench/gpu.sh --dry-run    # print what would run, run nothing
#
# Without a GPU it prints the plan and exits 0. A framework that does not see the GPU (a CPU-only wheel) is
# skipped with a message rather than timed on the CPU. TensorFlow and JAX place work on the GPU by themselves;
# torch needs --device cuda, which bench_torch.py, bench_training.py and bench_pipelines.py take (a script
# whose --help lacks it is skipped for torch, with a message, rather than timed on the CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

QUICK=() DRY=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=(--quick) ;;
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

sees_gpu() {  # sees_gpu torch|tf|jax: does this framework see a CUDA device?
  case "$1" in
    torch) "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" ;;
    tf) TF_CPP_MIN_LOG_LEVEL=3 "$PY" -c "import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)" ;;
    jax) "$PY" -c "import sys, jax; sys.exit(0 if jax.default_backend() == 'gpu' else 1)" ;;
  esac >/dev/null 2>&1
}

has_device_flag() { "$PY" "$1" --help 2>/dev/null | grep -q -- "--device"; }

GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GPU=1; fi
if [ "$GPU" = 0 ] || [ "$DRY" = 1 ]; then
  [ "$GPU" = 0 ] && echo "gpu.sh: no CUDA GPU found (nvidia-smi lists none); nothing is run. On a GPU machine it runs:"
  [ "$GPU" = 1 ] && echo "gpu.sh: --dry-run; on this GPU it would run:"
  echo "  $PY bench/bench_torch.py ${QUICK[*]} --device cuda"
  echo "  $PY bench/bench_tf.py ${QUICK[*]}                     (TensorFlow places work on the GPU itself)"
  echo "  $PY bench/bench_flax.py ${QUICK[*]}                   (JAX's default backend is the GPU)"
  echo "  $PY bench/bench_training.py ${QUICK[*]} --backends torch,tf,flax --device cuda"
  echo "  $PY bench/bench_pipelines.py ${QUICK[*]} --device cuda"
  exit 0
fi

LOGS="out/gpu-bench-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$LOGS"
nvidia-smi -L | tee "$LOGS/device.txt"
FAILED=()

run() {  # run NAME COMMAND...: run it, log to $LOGS/NAME.txt, remember a failure
  local name=$1; shift
  echo; echo "=== $name: $*"
  "$@" 2>&1 | tee "$LOGS/$name.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || FAILED+=("$name")
}

if sees_gpu torch; then
  if has_device_flag bench/bench_torch.py; then run torch "$PY" bench/bench_torch.py "${QUICK[@]}" --device cuda
  else echo "skipped torch forward/generate: bench/bench_torch.py has no --device flag (it would time the CPU)"; fi
else echo "skipped torch: this torch does not see the GPU (a CPU-only wheel?)"; fi

if sees_gpu tf; then run tf "$PY" bench/bench_tf.py "${QUICK[@]}"
else echo "skipped tf: TensorFlow does not see the GPU (install tensorflow[and-cuda])"; fi

if sees_gpu jax; then run flax "$PY" bench/bench_flax.py "${QUICK[@]}"
else echo "skipped flax: JAX's default backend is not the GPU (install jax[cuda12])"; fi

TRAIN=()
sees_gpu torch && has_device_flag bench/bench_training.py && TRAIN+=(torch)
sees_gpu tf && TRAIN+=(tf)
sees_gpu jax && TRAIN+=(flax)
DEVICE=()
has_device_flag bench/bench_training.py && DEVICE=(--device cuda)
if [ ${#TRAIN[@]} -gt 0 ]; then
  run training "$PY" bench/bench_training.py "${QUICK[@]}" --backends "$(IFS=,; echo "${TRAIN[*]}")" "${DEVICE[@]}"
fi

PIPES=() DEVICE=()
sees_gpu torch && PIPES+=(torch) && DEVICE=(--device cuda)
sees_gpu tf && PIPES+=(tf)
sees_gpu jax && PIPES+=(flax)
if [ ${#PIPES[@]} -gt 0 ]; then
  run pipelines "$PY" bench/bench_pipelines.py "${QUICK[@]}" "${DEVICE[@]}" --backends "$(IFS=,; echo "${PIPES[*]}")"
fi

echo; echo "logs in $LOGS"
if [ ${#FAILED[@]} -gt 0 ]; then echo "failed: ${FAILED[*]}"; exit 1; fi
