#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/lint-imports  # the layer rules of docs/architecture.md ([tool.importlinter] in pyproject.toml)
.venv/bin/python -m pytest -q "$@"
