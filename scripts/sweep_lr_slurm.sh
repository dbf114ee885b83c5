#!/usr/bin/env bash
# Learning-rate sweep as a SLURM job array: one configs/lr_*.py per task.
#
# Submit from the repository root, with the venv activated (sbatch passes the
# environment on), one task per config (configs/lr_*.py sorted by name: 7):
#
#   jobid=$(sbatch --parsable --array=0-6 scripts/sweep_lr_slurm.sh \
#             runs/lr_sweep [--config.FIELD=VALUE ...])
#   sbatch --dependency="afterany:${jobid%%;*}" \
#     --wrap "python -m lettercnn.report runs/lr_sweep"
#
# The second job writes the report (summary.md, summary.csv, plots) once every
# task has ended, however it ended; `python -m lettercnn.report runs/lr_sweep`
# also works by hand at any time, partially while tasks still run.
#
# Task i runs the i-th config (0-based) through `scripts/sweep_lr.sh
# SWEEP_DIR --no-report`, so everything said there holds: the run trains into
# SWEEP_DIR/<config stem> with its output in log.txt there, a finished run is
# skipped and an unfinished one resumes, so resubmitting the same array after
# a preemption or time limit continues the sweep. PYTHON and CONFIGS work as
# there (CONFIGS: the array indexes its list, in its order). The tasks share
# SWEEP_DIR/sweep_overrides.txt, which the first to start writes: resubmitting
# into SWEEP_DIR with other overrides fails every task at once (exit 2). A
# task whose run another process is training reports it busy and exits 1. In
# a sweep folder from before sweep_overrides.txt, each task relaunches its
# run, finished or not, so that lettercnn.main checks it against its config;
# the file is then written only by a sweep of every config
# (scripts/sweep_lr.sh SWEEP_DIR [--config.FIELD=VALUE ...]).
#
# Ask for resources on the sbatch command line, e.g. `--gres=gpu:1
# --cpus-per-task=4 --time=4:00:00`; add `%N` to --array (e.g. 0-6%2) to cap
# how many tasks run at once. Set LETTERCNN_ROOT if you submit from elsewhere
# than the repository root (SLURM runs a copy of this script, so it cannot
# find the repository from its own path).
#
# If the dataset is not built yet, build it before submitting (e.g. train one
# config briefly with the same data overrides): tasks starting together would
# otherwise race to build it.
#
#SBATCH --job-name=lettercnn-lr
#SBATCH --output=slurm-%x-%A_%a.out
set -euo pipefail

die() {
  echo "sweep_lr_slurm.sh: error: $*" >&2
  exit 2
}

# The repository: LETTERCNN_ROOT, this script's parent (when run directly), or
# the directory sbatch was called from.
repo_root=''
for candidate in "${LETTERCNN_ROOT:-}" \
  "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" "${SLURM_SUBMIT_DIR:-}"; do
  if [[ -n "${candidate}" && -f "${candidate}/scripts/sweep_lr.sh" ]]; then
    repo_root="$(cd "${candidate}" && pwd)"
    break
  fi
done
[[ -n "${repo_root}" ]] ||
  die "cannot find the repository; submit from its root or set LETTERCNN_ROOT"

(($# >= 1)) ||
  die "usage: sbatch --array=0-6 $0 SWEEP_DIR [--config.FIELD=VALUE ...]"
[[ -n "${SLURM_ARRAY_TASK_ID:-}" ]] ||
  die "SLURM_ARRAY_TASK_ID is unset; submit with sbatch --array=0-N"

if [[ -n "${CONFIGS:-}" ]]; then
  read -r -a configs <<<"${CONFIGS}"
else
  shopt -s nullglob
  configs=("${repo_root}"/configs/lr_*.py)
  shopt -u nullglob
fi
task="${SLURM_ARRAY_TASK_ID}"
count="${#configs[@]}"
((task < count)) ||
  die "task ${task} but only ${count} configs: use --array=0-$((count - 1))"

echo "[sweep task ${task}] ${configs[task]} on $(hostname)"
CONFIGS="${configs[task]}" exec "${repo_root}/scripts/sweep_lr.sh" \
  "$@" --no-report
