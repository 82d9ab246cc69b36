#!/usr/bin/env bash
# Every GPU check in one command (about 9 minutes on one H100-class GPU): the gpu-marked tests,
# the training step vs byol-pytorch 0.9.1 (resnet50, 224 px, bf16, channels_last; eager and
# compiled), the overhead breakdown, augmentation throughput vs kornia, peak memory per image vs
# the peer, and a short pretrain.py run with --amp bf16 --channels-last --compile. Each part's
# raw output goes to OUT (default benchmarks/results/suite_<device>[_quick]/), with the GPU model and versions.
#
#   bash benchmarks/gpu_suite.sh                        # on a CUDA machine
#   bash benchmarks/gpu_suite.sh --device cpu --quick   # the same parts, tiny, on CPU (CI runs it)
#   bash benchmarks/gpu_suite.sh --fetch-wheels         # here, with network: fill benchmarks/wheels
#
# A GPU machine may have torch, torchvision and timm but no network: whatever else is missing
# (kornia, which byol-torch needs; byol-pytorch 0.9.1 and its dependencies for the peer)
# is installed from the wheels in benchmarks/wheels/ (BYOL_WHEELS), never from the network.
# The peer gets its own virtualenv (system packages visible, its own byol_pytorch); set
# BYOL_PEER_PYTHON to use an existing one. This repository is used in place (PYTHONPATH).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEVICE=cuda
QUICK=0
OUT=""
WHEELS="${BYOL_WHEELS:-$ROOT/benchmarks/wheels}"
PYTHON="${PYTHON:-python3}"
PEER_WHEELS="byol_pytorch accelerate beartype einops psutil"
OURS_WHEELS="kornia kornia_rs"

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --fetch-wheels)
      # Linux x86-64 wheels for the interpreter versions a GPU machine may have.
      for py in 3.10 3.11 3.12 3.13; do
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
          --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
          --platform manylinux2014_x86_64 -d "$WHEELS" \
          byol-pytorch==0.9.1 accelerate beartype einops psutil kornia kornia-rs
      done
      ls "$WHEELS"; exit 0 ;;
    -h|--help) usage ;;
    *) echo "gpu_suite.sh: unknown option $1 (see --help)" >&2; usage 2 ;;
  esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "--device must be cpu or cuda, got $DEVICE" >&2; exit 2 ;; esac
if [ "$DEVICE" = cuda ] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_suite.sh: no CUDA device visible to $PYTHON; on a CPU run: --device cpu --quick" >&2
  exit 2
fi
OUT="${OUT:-$ROOT/benchmarks/results/suite_$DEVICE$([ "$QUICK" = 1 ] && echo _quick)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

wheel_files() {  # the wheels of the given project names found in $WHEELS (one per name)
  local name f
  for name in "$@"; do
    f="$(ls "$WHEELS"/"$name"-*.whl 2>/dev/null | head -n 1 || true)"
    [ -n "$f" ] && echo "$f"
  done
  return 0
}

# ---- ours: this repository in place, plus kornia if the interpreter lacks it
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import kornia" 2>/dev/null; then
  mapfile -t whl < <(wheel_files $OURS_WHEELS)
  if [ "${#whl[@]}" -gt 0 ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$TMP/site" "${whl[@]}"
    export PYTHONPATH="$PYTHONPATH:$TMP/site"
  else
    echo "gpu_suite.sh: byol-torch needs kornia, which $PYTHON lacks, and $WHEELS has no kornia" \
      "wheel; run bash benchmarks/gpu_suite.sh --fetch-wheels where there is network" >&2
    exit 2
  fi
fi

# ---- the peer: byol-pytorch 0.9.1 in its own virtualenv
PEER="${BYOL_PEER_PYTHON:-}"
if [ -z "$PEER" ]; then
  "$PYTHON" -m venv --system-site-packages "$TMP/peer"
  PEER="$TMP/peer/bin/python"
  mapfile -t whl < <(wheel_files $PEER_WHEELS)
  if [ "${#whl[@]}" -gt 0 ]; then
    "$PEER" -m pip install -q --no-index --no-deps --no-compile "${whl[@]}"
  else
    "$PEER" -m pip install -q "byol-pytorch==0.9.1"
  fi
fi

# ---- sizes: the issue's GPU configuration, or seconds-long stand-ins on CPU
if [ "$DEVICE" = cuda ]; then
  ARCH=resnet50; SIZE=224; BATCH=128; ROUNDS=10; STEPS=5; WARMUP=5
  AUG_BATCH=128; AUG_ITERS=20; EPOCHS=8; MAX_STEPS=0; PT_BATCH=256
  STEP_IMPLS=ours,ours-compiled,peer,peer-compiled; DTYPE=bf16
else
  ARCH=resnet18; SIZE=32; BATCH=8; ROUNDS=2; STEPS=1; WARMUP=1
  AUG_BATCH=8; AUG_ITERS=2; EPOCHS=1; MAX_STEPS=2; PT_BATCH=16
  # the peer's compiled learner recompiles for minutes on CPU, and its code is not ours to keep
  # from rotting: the CPU run leaves that row out
  STEP_IMPLS=ours,ours-compiled,peer
  DTYPE=fp32  # bf16 is emulated on most CPUs: seconds per toy step
fi
if [ "$QUICK" = 1 ] && [ "$DEVICE" = cuda ]; then ROUNDS=3; STEPS=2; EPOCHS=2; fi

START=$SECONDS
run() {  # run NAME CMD...: CMD's output (stdout and stderr) to OUT/NAME.txt, timed
  local name="$1"; shift
  local t0=$SECONDS
  echo "== $name: $*" >&2
  if ! "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err"; then
    echo "gpu_suite.sh: $name failed; last lines of $OUT/$name.err:" >&2
    tail -n 30 "$OUT/$name.err" >&2
    exit 1
  fi
  echo "   $name: $((SECONDS - t0)) s" >&2
}

cd "$ROOT"
{
  echo "# gpu_suite.sh --device $DEVICE$([ "$QUICK" = 1 ] && echo " --quick"), $(date -u +%FT%TZ)"
  "$PYTHON" - <<'EOF'
import platform, subprocess, torch, torchvision
print(f"python {platform.python_version()}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, CUDA {torch.version.cuda}")
if torch.cuda.is_available():
    print("GPU:", torch.cuda.get_device_name(0))
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip())
else:
    print("GPU: none (CPU run)")
try:
    import kornia
    print("kornia", kornia.__version__)
except ImportError:
    print("kornia: not installed")
EOF
  echo "git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
} >"$OUT/environment.txt"

run tests_gpu "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider "$ROOT/tests"
if [ "$DEVICE" = cuda ]; then STEP_CONFIG=gpu; else STEP_CONFIG=smoke; fi
run step "$PYTHON" benchmarks/step.py --config "$STEP_CONFIG" --peer-python "$PEER" \
  --arch "$ARCH" --image-size "$SIZE" --batch "$BATCH" --dtype "$DTYPE" --channels-last on \
  --impls "$STEP_IMPLS" --rounds "$ROUNDS" \
  --steps-per-round "$STEPS" --warmup "$WARMUP"
run overhead "$PYTHON" benchmarks/overhead.py --device "$DEVICE" --arch "$ARCH" \
  --image-size "$SIZE" --batch "$BATCH" --dtype "$DTYPE" --channels-last --rounds "$ROUNDS"
run augment "$PYTHON" benchmarks/augment.py --device "$DEVICE" --sizes "$SIZE" \
  --batch "$AUG_BATCH" --iters "$AUG_ITERS"
run memory "$PYTHON" benchmarks/memory.py --device "$DEVICE" --peer-python "$PEER" \
  --arch "$ARCH" --image-size "$SIZE" --batch "$BATCH" --dtype "$DTYPE" --channels-last on \
  --impls ours,peer --warmup "$WARMUP"
# A CIFAR-size run: the mini CIFAR-10 set when it is beside the repository, else the bundled
# digits (scikit-learn) at 32 px.
MINI="${BYOL_MINI_CIFAR:-$ROOT/../shared/data/cifar10_mini_train.npz}"
if [ -f "$MINI" ]; then DATA=(--dataset npz --data-path "$MINI"); else DATA=(--dataset digits --image-size 32); fi
run pretrain "$PYTHON" examples/pretrain.py "${DATA[@]}" --backbone resnet18 --cifar-stem \
  --epochs "$EPOCHS" --max-steps "$MAX_STEPS" --batch-size "$PT_BATCH" \
  --amp bf16 --channels-last --compile --device "$DEVICE" --knn-every "$EPOCHS" \
  --output-dir "$TMP/pretrain"
cp "$TMP/pretrain/log.jsonl" "$OUT/pretrain_log.jsonl"
echo "gpu_suite.sh: done in $((SECONDS - START)) s; results in $OUT" >&2
echo "total $((SECONDS - START)) s" >>"$OUT/environment.txt"
