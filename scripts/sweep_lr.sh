#!/usr/bin/env bash
# Learning-rate sweep: trains every configs/lr_*.py, then writes the report.
#
# Usage:
#   scripts/sweep_lr.sh SWEEP_DIR [-j N] [--no-pin] [--no-report]
#                       [--config.FIELD=VALUE ...]
#
# Each config trains into SWEEP_DIR/<config stem> (e.g. SWEEP_DIR/lr_1e-4)
# with `python -m lettercnn.main`, its output appended to log.txt there. The
# --config.FIELD=VALUE overrides (write them with `=`) go to every run. Runs
# go one at a time, or N at once with -j N (runs started together build the
# dataset once: the others wait for it). With -j N, N > 1, each of the N
# slots gets its own share of the CPUs this script may use (taskset), so
# concurrent runs do not fight over cores: at batch 1 a run on one core is
# about as fast as on two, and much steadier. --no-pin, a machine with fewer
# CPUs than N, or no taskset leaves the runs unpinned. A run whose status.json
# says converged, not_converged or diverged is skipped; an unfinished one is
# relaunched and resumes from its checkpoint. A failing run does not stop the
# others: the script lists all failures at the end and then exits 1. Last,
# `python -m lettercnn.report SWEEP_DIR` writes summary.md, summary.csv and
# the plots and prints the table (--no-report skips it). Ctrl-C stops all
# runs; rerunning the same command resumes the sweep.
#
# Environment:
#   PYTHON   interpreter (default: python, i.e. the activated venv's).
#   CONFIGS  space-separated config files to run instead of configs/lr_*.py,
#            absolute or relative to the repository root, in the given order,
#            e.g. CONFIGS="configs/lr_1e-1.py configs/lr_1e-4.py".
#
# Example:
#   scripts/sweep_lr.sh runs/lr_sweep -j 2 --config.num_epochs=10
#
# Needs bash >= 4.4.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
PYTHON="${PYTHON:-python}"
readonly STATUS_POLL_S=1

usage() {
  echo "Usage: $0 SWEEP_DIR [-j N] [--no-pin] [--no-report]" \
    "[--config.FIELD=VALUE ...]"
  echo "See the header of $0 for details."
}

die() {
  echo "sweep_lr.sh: error: $*" >&2
  exit 2
}

# --- Arguments -----------------------------------------------------------
sweep_dir=''
jobs=1
run_report=1
pin=1
overrides=()
while (($#)); do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    -j | --jobs)
      (($# >= 2)) || die "$1 needs a number"
      jobs="$2"
      shift
      ;;
    -j*) jobs="${1#-j}" ;;
    --jobs=*) jobs="${1#--jobs=}" ;;
    --no-report) run_report=0 ;;
    --no-pin) pin=0 ;;
    --*) overrides+=("$1") ;;
    -*) die "unknown option $1 (overrides look like --config.FIELD=VALUE)" ;;
    *)
      [[ -z "${sweep_dir}" ]] ||
        die "more than one SWEEP_DIR: ${sweep_dir} and $1"
      sweep_dir="$1"
      ;;
  esac
  shift
done
if [[ -z "${sweep_dir}" ]]; then
  usage >&2
  exit 2
fi
[[ "${jobs}" =~ ^[1-9][0-9]*$ ]] ||
  die "-j needs a positive integer, not '${jobs}'"
command -v "${PYTHON}" >/dev/null ||
  die "no Python interpreter '${PYTHON}'; set PYTHON"

# --- Configs -------------------------------------------------------------
configs=()
if [[ -n "${CONFIGS:-}" ]]; then
  read -r -a requested <<<"${CONFIGS}"
  for config in "${requested[@]}"; do
    [[ "${config}" == /* ]] || config="${REPO_ROOT}/${config}"
    [[ -f "${config}" ]] || die "CONFIGS names a missing file: ${config}"
    configs+=("${config}")
  done
else
  shopt -s nullglob
  configs=("${REPO_ROOT}"/configs/lr_*.py)
  shopt -u nullglob
fi
((${#configs[@]})) || die "no configs to run (configs/lr_*.py or CONFIGS)"

declare -A config_of_stem=()
stems=()
for config in "${configs[@]}"; do
  stem="$(basename "${config}" .py)"
  [[ -z "${config_of_stem[${stem}]:-}" ]] || die "two configs named ${stem}"
  config_of_stem["${stem}"]="${config}"
  stems+=("${stem}")
done

mkdir -p "${sweep_dir}"
sweep_dir="$(cd "${sweep_dir}" && pwd)"
# `python -m lettercnn.main` and the configs' `from configs import default`
# need the repository on the path; the working directory stays the caller's so
# relative paths in overrides mean what the caller meant.
export PYTHONPATH="${REPO_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"

# --- CPU slots -----------------------------------------------------------
# One comma-separated CPU list per slot when runs are pinned, else none.
cpu_sets=()
if ((pin && jobs > 1)) && command -v taskset >/dev/null; then
  mapfile -t cpu_sets < <("${PYTHON}" -c '
import os, sys
cpus, slots = sorted(os.sched_getaffinity(0)), int(sys.argv[1])
if len(cpus) >= slots:
  for i in range(slots):
    share = cpus[i * len(cpus) // slots:(i + 1) * len(cpus) // slots]
    print(",".join(map(str, share)))' "${jobs}")
fi

# --- Runs ----------------------------------------------------------------
# Prints the status recorded in WORKDIR/status.json, or nothing.
run_status() {
  local status_file="$1/status.json"
  [[ -f "${status_file}" ]] || return 0
  "${PYTHON}" -c '
import json, sys
try:
  print(json.load(open(sys.argv[1])).get("status", ""))
except (OSError, ValueError, AttributeError):
  pass' "${status_file}"
}

declare -A pid_of_stem=()
declare -A slot_of_stem=()
failures=()

# Prints the first slot no running run holds.
free_slot() {
  local slot taken
  for ((slot = 0; slot < jobs; slot++)); do
    for taken in "${slot_of_stem[@]}"; do
      [[ "${taken}" != "${slot}" ]] || continue 2
    done
    echo "${slot}"
    return
  done
}

launch() {
  local stem="$1"
  local workdir="${sweep_dir}/${stem}"
  local log="${workdir}/log.txt"
  mkdir -p "${workdir}"
  local cmd=("${PYTHON}" -m lettercnn.main
    "--config=${config_of_stem[${stem}]}" "--workdir=${workdir}"
    "${overrides[@]}")
  local where=''
  if ((${#cpu_sets[@]})); then
    local slot
    slot="$(free_slot)"
    slot_of_stem["${stem}"]="${slot}"
    cmd=(taskset -c "${cpu_sets[${slot}]}" "${cmd[@]}")
    where=" on CPUs ${cpu_sets[${slot}]}"
  fi
  printf '=== %s: %s\n' "$(date '+%F %T')" "${cmd[*]}" >>"${log}"
  "${cmd[@]}" >>"${log}" 2>&1 &
  pid_of_stem["${stem}"]=$!
  echo "[sweep] ${stem}: started${where} (log: ${log})"
}

# Collects the exit status of the finished run `stem` and says how it ended.
finish() {
  local stem="$1"
  local workdir="${sweep_dir}/${stem}"
  local rc=0
  wait "${pid_of_stem[${stem}]}" || rc=$?
  unset 'pid_of_stem[${stem}]' 'slot_of_stem[${stem}]'
  if ((rc == 0)); then
    echo "[sweep] ${stem}: $(run_status "${workdir}" || true)"
  else
    failures+=("${stem} (exit ${rc}, log: ${workdir}/log.txt)")
    echo "[sweep] ${stem}: FAILED (exit status ${rc}); end of its log:"
    tail -n 5 "${workdir}/log.txt" | sed 's/^/    /'
  fi
}

# Waits until fewer than `limit` runs are in flight.
wait_for_slots() {
  local limit="$1" stem
  while ((${#pid_of_stem[@]} >= limit)); do
    for stem in "${!pid_of_stem[@]}"; do
      kill -0 "${pid_of_stem[${stem}]}" 2>/dev/null || finish "${stem}"
    done
    ((${#pid_of_stem[@]} < limit)) || sleep "${STATUS_POLL_S}"
  done
}

# Background runs ignore Ctrl-C, so stop them explicitly, and wait until they
# have ended so that a rerun cannot overlap them.
stop_runs() {
  local pid
  trap - INT TERM
  for pid in "${pid_of_stem[@]}"; do
    kill -TERM "${pid}" 2>/dev/null || true
  done
  for pid in "${pid_of_stem[@]}"; do
    wait "${pid}" 2>/dev/null || true
  done
  echo "[sweep] interrupted; rerun the same command to resume." >&2
  exit 130
}
trap stop_runs INT TERM

echo "[sweep] ${#stems[@]} runs into ${sweep_dir}, ${jobs} at a time."
for stem in "${stems[@]}"; do
  status="$(run_status "${sweep_dir}/${stem}")"
  case "${status}" in
    converged | not_converged | diverged)
      echo "[sweep] ${stem}: already finished (${status}), skipped."
      continue
      ;;
  esac
  wait_for_slots "${jobs}"
  launch "${stem}"
done
wait_for_slots 1

report_rc=0
if ((run_report)); then
  echo "[sweep] report: ${PYTHON} -m lettercnn.report ${sweep_dir}"
  "${PYTHON}" -m lettercnn.report "${sweep_dir}" || report_rc=$?
fi

if ((${#failures[@]})); then
  echo "[sweep] ${#failures[@]} run(s) failed:" >&2
  printf '  %s\n' "${failures[@]}" >&2
  exit 1
fi
exit "${report_rc}"
