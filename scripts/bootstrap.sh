#!/usr/bin/env bash
# Set up everything this project needs on a fresh Debian/Ubuntu machine or CI runner, idempotently:
# the system libraries open3d loads, a virtual environment in .venv, torch (CPU wheel 2.13.0 unless one is
# installed), and the project with its dev extra. Usage: source nothing, just `bash scripts/bootstrap.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || need_apt+=(libusb-1.0-0)   # open3d links it
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q "${need_apt[@]}" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q "${need_apt[@]}" >/dev/null; }
    else
        echo "bootstrap: please install the system packages: ${need_apt[*]}" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # A pinned CPU wheel: an unpinned torch would pull a multi-GB CUDA build.
    .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
# The constraints keep a fresh install from backtracking through boto3 releases (see the file).
.venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".[dev]"
