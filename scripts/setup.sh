#!/usr/bin/env bash
# Creates .venv and installs the package with its test extras. Safe to re-run: an installed torch is kept.
#
# torch comes first and on its own, because an unpinned `torch` (asked for by any dependency) pulls a multi-GB CUDA
# build. With a GPU we install the default build (CUDA). Without one we install the pinned release 2.13.0, which is
# the CPU build where the pip index or find-links offer one (as on our CI machines); elsewhere set TORCH_INDEX_URL to
# PyTorch's CPU wheel index to get the small CPU build. TORCH_SPEC (e.g. "torch==2.9.1") picks another release.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

if "$PY" -c "import torch" 2>/dev/null; then
    echo "setup: keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
    if [ -z "${TORCH_SPEC:-}" ]; then
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
            TORCH_SPEC="torch>=2.6"
        else
            TORCH_SPEC="torch==2.13.0"
        fi
    fi
    echo "setup: installing $TORCH_SPEC"
    "$PY" -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"
fi

"$PY" -m pip install -q -e ".[test]"
echo "setup: ready ($("$PY" -c 'import transformers, torch; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
