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
        # Another bootstrap (a second clone, CI beside the demo) may hold apt's locks: wait for them, up to 10 min,
        # instead of failing at once. DPkg::Lock::Timeout covers install; apt 2.6's update ignores it for the
        # package lists' lock, so update is retried while that lock is what stops it.
        apt_wait=(-o DPkg::Lock::Timeout=600)
        apt_update() {
            local err
            for _ in $(seq 120); do
                if err=$(apt-get "${apt_wait[@]}" update -q 2>&1 >/dev/null); then return 0; fi
                case "$err" in *"Could not get lock"*) sleep 5 ;; *) echo "$err" >&2; return 1 ;; esac
            done
            echo "$err" >&2; return 1
        }
        apt-get "${apt_wait[@]}" install -y -q "${need_apt[@]}" >/dev/null 2>&1 \
            || { apt_update && apt-get "${apt_wait[@]}" install -y -q "${need_apt[@]}" >/dev/null; }
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
