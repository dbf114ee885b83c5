#!/usr/bin/env bash
# Sweep: trains every point of configs x grids x seeds, then writes the report.
#
# Usage:
#   scripts/sweep.sh SWEEP_DIR [--grid FIELD=V1,V2,...]... [--seeds N | --seeds S1,S2,...]
#                    [-j N] [--no-pin] [--no-report] [--configs DIR]
#                    [--list] [--task I] [--config.FIELD=VALUE ...]
#
# docs/sweeps.md explains the arguments, the sweep folder and the exit
# statuses. The work is lettercnn.sweep.launch's (`python -m lettercnn.sweep`,
# its docstring states the rules): this script runs it with the repository on
# PYTHONPATH, so that it works from any directory; relative paths in the
# arguments mean what they mean in the caller's directory.
#
# Environment:
#   PYTHON   interpreter (default: the repository's .venv/bin/python if there
#            is one, else python, i.e. the activated venv's).
#   CONFIGS  space-separated config files to run instead of configs/lr_*.py,
#            absolute or relative to the repository root, in the given order.
#
# Examples:
#   scripts/sweep.sh runs/lr_sweep -j 2 --config.num_epochs=10
#   scripts/sweep.sh runs/lr_batch --grid batch_size=1,8,32,128 --seeds 3 -j 2
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python
  [[ -x "${REPO_ROOT}/.venv/bin/python" ]] && PYTHON="${REPO_ROOT}/.venv/bin/python"
fi
if ! command -v "${PYTHON}" >/dev/null; then
  echo "sweep.sh: error: no Python interpreter '${PYTHON}'; set PYTHON" >&2
  exit 2
fi
export PYTHON
export PYTHONPATH="${REPO_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${PYTHON}" -m lettercnn.sweep "$@"
