#!/usr/bin/env bash
# Sweep as a SLURM job array: one point of configs x grids x seeds per task.
#
# Submit from the repository root, with the venv activated (sbatch passes the
# environment on), with the same arguments as scripts/sweep.sh and one task
# per point; `scripts/sweep.sh SWEEP_DIR ARGS... --list` numbers the points
# (7 for the default configs/lr_*.py, 84 with the grid below):
#
#   args=(runs/lr_batch --grid batch_size=1,8,32,128 --seeds 3)
#   n=$(scripts/sweep.sh "${args[@]}" --list | wc -l)
#   jobid=$(sbatch --parsable --array=0-$((n - 1)) scripts/sweep_slurm.sh "${args[@]}")
#   sbatch --dependency="afterany:${jobid%%;*}" \
#     --wrap "python -m lettercnn.report runs/lr_batch"
#
# The second job writes the report (summary.md, summary.csv, plots) once every
# task has ended, however it ended; `python -m lettercnn.report SWEEP_DIR`
# also works by hand at any time, partially while tasks still run.
#
# Task i runs point i (0-based, in --list's order) through `scripts/sweep.sh
# ARGS... --task i --no-report`, so everything said there holds: a bad grid
# fails every task at once (exit 2); the point trains into SWEEP_DIR/<name>
# with its output in log.txt there; a finished point is skipped and an
# unfinished one resumes, so resubmitting the same array after a preemption
# or time limit continues the sweep. PYTHON, CONFIGS and --configs work as
# there. The tasks share SWEEP_DIR/sweep_overrides.txt, which the first to
# start writes: resubmitting into SWEEP_DIR with other overrides fails every
# task at once (exit 2). A task whose run another process is training reports
# it busy and exits 1. In a sweep folder from before sweep_overrides.txt, each
# task relaunches its run, finished or not, so that lettercnn.main checks it
# against its config; the file is then written only by a sweep of every point
# (scripts/sweep.sh with the same arguments).
#
# Ask for resources on the sbatch command line, e.g. `--gres=gpu:1
# --cpus-per-task=4 --time=4:00:00`; add `%N` to --array (e.g. 0-83%8) to cap
# how many tasks run at once. Set LETTERCNN_ROOT if you submit from elsewhere
# than the repository root (SLURM runs a copy of this script, so it cannot
# find the repository from its own path).
#
# If the dataset is not built yet, build it before submitting (e.g. train one
# config briefly with the same data overrides): tasks starting together would
# otherwise race to build it.
#
#SBATCH --job-name=lettercnn-sweep
#SBATCH --output=slurm-%x-%A_%a.out
set -euo pipefail

die() {
  echo "sweep_slurm.sh: error: $*" >&2
  exit 2
}

# The repository: LETTERCNN_ROOT, this script's parent (when run directly), or
# the directory sbatch was called from.
repo_root=''
for candidate in "${LETTERCNN_ROOT:-}" \
  "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" "${SLURM_SUBMIT_DIR:-}"; do
  if [[ -n "${candidate}" && -f "${candidate}/scripts/sweep.sh" ]]; then
    repo_root="$(cd "${candidate}" && pwd)"
    break
  fi
done
[[ -n "${repo_root}" ]] ||
  die "cannot find the repository; submit from its root or set LETTERCNN_ROOT"

(($# >= 1)) ||
  die "usage: sbatch --array=0-N $0 SWEEP_DIR [sweep.sh arguments ...]"
[[ -n "${SLURM_ARRAY_TASK_ID:-}" ]] ||
  die "SLURM_ARRAY_TASK_ID is unset; submit with sbatch --array=0-N"

echo "[sweep task ${SLURM_ARRAY_TASK_ID}] $1 on $(hostname)"
exec "${repo_root}/scripts/sweep.sh" "$@" --task "${SLURM_ARRAY_TASK_ID}" \
  --no-report
