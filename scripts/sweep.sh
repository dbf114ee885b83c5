#!/usr/bin/env bash
# Sweep: trains every point of configs x grids x seeds, then writes the report.
#
# Usage:
#   scripts/sweep.sh SWEEP_DIR [--grid FIELD=V1,V2,...]... [--seeds N | --seeds S1,S2,...]
#                    [-j N] [--no-pin] [--no-report] [--configs DIR]
#                    [--list] [--task I] [--config.FIELD=VALUE ...]
#
# The points are the Cartesian product of the configs (configs/lr_*.py, or
# DIR/lr_*.py with --configs DIR, DIR absolute or relative to the repository
# root, e.g. --configs configs/tf for DIGITS' TensorFlow setup) and the grids:
# each --grid sweeps one config field over its values (commas inside (), []
# or quotes do not split, e.g. --grid 'lr_multistep_percents=(50,75),(30,60)'),
# and --seeds N sweeps `seed` over 0 ... N-1 (--seeds 0,3,7 over those; one
# seed is --grid seed=S). `python -m lettercnn.sweep.grid` lists them and
# checks every one with lettercnn.main's own parsing and config checks: an
# unknown field, a value its field does not take, an empty or repeated value,
# or a field both swept and fixed is one error line, exit status 2, before
# anything runs. --list prints the points, numbered from 0, and exits.
#
# Each point trains into SWEEP_DIR/<name>, its name the config's stem and the
# point's grid values in the order given, seed last: SWEEP_DIR/lr_1e-4 with
# no grid, SWEEP_DIR/lr_1e-4,batch_size=8,seed=2 with --grid
# batch_size=1,8 --seeds 3. It runs `python -m lettercnn.main`, its output
# appended to log.txt there, with the point's values and the
# --config.FIELD=VALUE overrides (write them with `=`), which go to every
# point. Runs go one at a time, or N at once with -j N (runs started together
# build the dataset once: the others wait for it). With -j N, N > 1, each of
# the N slots gets its own share of the CPUs this script may use (taskset), so
# concurrent runs do not fight over cores: at batch 1 a run on one core is
# about as fast as on two, and much steadier. --no-pin, a machine with fewer
# CPUs than N, or no taskset leaves the runs unpinned. A point whose
# status.json says converged, not_converged or diverged is skipped; an
# unfinished one is relaunched and resumes from its checkpoint, so a grid can
# grow: rerun with more values and only the new points train. A failing run
# does not stop the others: the script lists all failures at the end. Last,
# `python -m lettercnn.report SWEEP_DIR` writes summary.md, summary.csv and
# the plots and prints the table (--no-report skips it). Ctrl-C stops all
# runs; rerunning the same command resumes the sweep. --task I runs point I
# alone (scripts/sweep_slurm.sh runs one per SLURM array task).
#
# One process per workdir: a run whose workdir another live process holds
# (its lock, WORKDIR/.lock, as `python -m lettercnn.run.workdir WORKDIR`
# tells) is reported busy and not started, and so is a run that
# `lettercnn.main` itself finds taken (exit status 75). Such a point did not
# finish in this sweep: the end lists busy runs apart from failures, and the
# script exits 1 if any run failed or was busy; rerun it once the other
# process has ended.
#
# A sweep folder remembers its overrides: the first sweep into SWEEP_DIR
# writes them to SWEEP_DIR/sweep_overrides.txt (one a line, sorted, the last
# of several for one field only, since that is the one lettercnn.main uses),
# and a later sweep into it with other overrides (in any order the same ones
# are fine) stops before launching anything, with exit status 2: the finished
# runs there were trained without them, and skipping them would pass the old
# results off as this sweep's. (Grid values need no record: they are in each
# point's name.) Use another SWEEP_DIR for other overrides, or delete
# sweep_overrides.txt if you mean to change them. A sweep folder with runs
# but no sweep_overrides.txt (made before it existed) is checked run by run
# instead: that sweep skips nothing on the status alone but launches every
# run, so that lettercnn.main compares each with its config (a finished run
# of the same config says "already finished"; one of another config is
# refused, which the sweep reports as a failure); it writes
# sweep_overrides.txt once every run in the folder has come through that
# check, and otherwise (a failure, a busy run, a sweep of only some points)
# leaves it unwritten so that the next sweep checks again.
#
# Exit status: 1 when a run failed or was busy; 2 for bad arguments, a bad
# grid or overrides that differ from SWEEP_DIR's; 130 after Ctrl-C; else the
# report's (0 with --no-report).
#
# Environment:
#   PYTHON   interpreter (default: python, i.e. the activated venv's).
#   CONFIGS  space-separated config files to run instead of configs/lr_*.py,
#            absolute or relative to the repository root, in the given order,
#            e.g. CONFIGS="configs/lr_1e-1.py configs/lr_1e-4.py".
#
# Examples:
#   scripts/sweep.sh runs/lr_sweep -j 2 --config.num_epochs=10
#   scripts/sweep.sh runs/lr_batch --grid batch_size=1,8,32,128 --seeds 3 -j 2
#
# Needs bash >= 4.4.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
PYTHON="${PYTHON:-python}"
readonly STATUS_POLL_S=1
readonly OVERRIDES_FILE=sweep_overrides.txt
# `lettercnn.main`'s exit status when another process holds the workdir
# (lettercnn.run.workdir.BUSY_EXIT_CODE, EX_TEMPFAIL).
readonly BUSY_EXIT=75

usage() {
  echo "Usage: $0 SWEEP_DIR [--grid FIELD=V1,V2,...]... [--seeds N|S1,S2,...]" \
    "[-j N] [--no-pin] [--no-report] [--configs DIR] [--list] [--task I]" \
    "[--config.FIELD=VALUE ...]"
  echo "See the header of $0 for details."
}

die() {
  echo "sweep.sh: error: $*" >&2
  exit 2
}

# --- Arguments -----------------------------------------------------------
sweep_dir=''
jobs=1
run_report=1
pin=1
overrides=()
grid_args=()
list_only=0
task=''
config_dir=configs
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
    --configs)
      (($# >= 2)) || die "$1 needs a folder"
      config_dir="$2"
      shift
      ;;
    --configs=*) config_dir="${1#--configs=}" ;;
    --grid | --seeds)
      (($# >= 2)) || die "$1 needs a value"
      grid_args+=("$1=$2")
      shift
      ;;
    --grid=* | --seeds=*) grid_args+=("$1") ;;
    --list) list_only=1 ;;
    --task)
      (($# >= 2)) || die "$1 needs a point number"
      task="$2"
      shift
      ;;
    --task=*) task="${1#--task=}" ;;
    --*)
      # sweep_overrides.txt holds one override a line.
      [[ "$1" != *$'\n'* ]] || die "an override holds a line break: $1"
      overrides+=("$1")
      ;;
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
[[ -z "${task}" || "${task}" =~ ^[0-9]+$ ]] ||
  die "--task needs a point number (0, 1, ...), not '${task}'"
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
  [[ "${config_dir}" == /* ]] || config_dir="${REPO_ROOT}/${config_dir}"
  [[ -d "${config_dir}" ]] || die "--configs names a missing folder: ${config_dir}"
  shopt -s nullglob
  configs=("${config_dir}"/lr_*.py)
  shopt -u nullglob
fi
((${#configs[@]})) ||
  die "no configs to run (${config_dir}/lr_*.py or CONFIGS)"

# `python -m lettercnn.main` and the configs' `from configs import default`
# need the repository on the path; the working directory stays the caller's so
# relative paths in overrides mean what the caller meant.
export PYTHONPATH="${REPO_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"

# --- Points --------------------------------------------------------------
# lettercnn.sweep.grid prints one line per point: name, config, the point's
# overrides, tab-separated; a bad grid is its one error line (exit 2).
override_args=()
for override in "${overrides[@]}"; do
  override_args+=("--override=${override}")
done
points_listing="$("${PYTHON}" -m lettercnn.sweep.grid "${grid_args[@]}" \
  "${override_args[@]}" -- "${configs[@]}")" || exit 2

declare -A config_of_name=()
declare -A point_overrides_of_name=()
names=()
while IFS=$'\t' read -r -a fields; do
  name="${fields[0]}"
  config_of_name["${name}"]="${fields[1]}"
  point_overrides_of_name["${name}"]="$(printf '%s\t' "${fields[@]:2}")"
  names+=("${name}")
done <<<"${points_listing}"

if ((list_only)); then
  for i in "${!names[@]}"; do
    printf '%d\t%s\n' "${i}" "${names[i]}"
  done
  exit 0
fi
if [[ -n "${task}" ]]; then
  ((task < ${#names[@]})) ||
    die "task ${task} but only ${#names[@]} points: use --array=0-$((${#names[@]} - 1))"
  names=("${names[task]}")
fi

mkdir -p "${sweep_dir}"
sweep_dir="$(cd "${sweep_dir}" && pwd)"

# --- Overrides -----------------------------------------------------------
# Prints the overrides as SWEEP_DIR records them: one a line, sorted, and of
# several for one field only the last (the one lettercnn.main uses), so that
# the same overrides in another order compare equal.
normalized_overrides() {
  local override
  local -A last_of_field=()
  for override in "${overrides[@]}"; do
    last_of_field["${override%%=*}"]="${override}"
  done
  ((${#last_of_field[@]})) || return 0
  printf '%s\n' "${last_of_field[@]}" | LC_ALL=C sort
}

# Prints newline-separated overrides for a message: quoted, or "none".
describe_overrides() {
  if [[ -z "$1" ]]; then
    echo none
  else
    echo "'${1//$'\n'/ }'"
  fi
}

# Writes the overrides to the record unless it exists; fails if it does. The
# record appears whole or not at all, and never replaces another one: several
# tasks of one SLURM array may start the same sweep at once, so it is written
# to a temporary file and then linked into place (ln, unlike mv, refuses to
# overwrite).
record_overrides() {
  local tmp linked=0
  tmp="$(mktemp "${sweep_dir}/.${OVERRIDES_FILE}.XXXXXX")" ||
    die "cannot write in ${sweep_dir}"
  if ! { [[ -z "${current_overrides}" ]] ||
    printf '%s\n' "${current_overrides}"; } >"${tmp}"; then
    rm -f "${tmp}"
    die "cannot write ${tmp}"
  fi
  ln "${tmp}" "${overrides_record}" 2>/dev/null && linked=1
  rm -f "${tmp}"
  ((linked)) || [[ -e "${overrides_record}" ]] ||
    die "cannot write ${overrides_record}"
  ((linked))
}

# Dies, touching nothing, unless the record holds this sweep's overrides.
check_overrides() {
  local recorded
  # Sorted again, in case someone wrote the file by hand.
  recorded="$(LC_ALL=C sort "${overrides_record}")" ||
    die "cannot read ${overrides_record}"
  [[ "${recorded}" != "${current_overrides}" ]] || return 0
  die "${sweep_dir} was swept with overrides" \
    "$(describe_overrides "${recorded}") and this run gives" \
    "$(describe_overrides "${current_overrides}"); use another SWEEP_DIR for" \
    "other overrides (or delete ${overrides_record} if you mean to change" \
    "them)"
}

overrides_record="${sweep_dir}/${OVERRIDES_FILE}"
current_overrides="$(normalized_overrides)"
# A folder with runs but no record predates it: its finished runs may hold
# other overrides, so this sweep launches them all (lettercnn.main checks
# each against its config) and writes the record only once all have passed.
# The record is looked for again after the runs: a sweep writes it before
# launching anything, so runs found while it is still absent were made
# without one.
unchecked_runs=0
if [[ -e "${overrides_record}" ]]; then
  check_overrides
elif compgen -G "${sweep_dir}/*/status.json" >/dev/null &&
  [[ ! -e "${overrides_record}" ]]; then
  unchecked_runs=1
elif ! record_overrides; then
  check_overrides # Another sweep has just written it.
fi

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
# Prints the state of WORKDIR: "busy PID" while another process holds it, or
# its status word ("none", "unreadable", "running", "converged", ...), or
# "unknown" if it cannot tell (then lettercnn.main, launched, will).
workdir_state() {
  "${PYTHON}" -m lettercnn.run.workdir "$1" || echo unknown
}

declare -A pid_of_name=()
declare -A slot_of_name=()
failures=()
busy=()

# Says that run `name` is busy: process `pid` holds its workdir.
report_busy() {
  local name="$1" pid="$2"
  busy+=("${name} (process ${pid})")
  echo "[sweep] ${name}: busy (process ${pid} holds its workdir), not started"
}

# Prints the pid named by the last "in use by process PID" error in a run's
# log, or "unknown".
busy_pid_in_log() {
  local pid
  pid="$(sed -n 's/^lettercnn: error: workdir .* is in use by process \([^ ]*\) .*/\1/p' \
    "$1" | tail -n 1)"
  echo "${pid:-unknown}"
}

# Prints the first slot no running run holds.
free_slot() {
  local slot taken
  for ((slot = 0; slot < jobs; slot++)); do
    for taken in "${slot_of_name[@]}"; do
      [[ "${taken}" != "${slot}" ]] || continue 2
    done
    echo "${slot}"
    return
  done
}

launch() {
  local name="$1"
  local workdir="${sweep_dir}/${name}"
  local log="${workdir}/log.txt"
  mkdir -p "${workdir}"
  local point_overrides
  IFS=$'\t' read -r -a point_overrides <<<"${point_overrides_of_name[${name}]}"
  local cmd=("${PYTHON}" -m lettercnn.main
    "--config=${config_of_name[${name}]}" "--workdir=${workdir}"
    "${point_overrides[@]}" "${overrides[@]}")
  local where=''
  if ((${#cpu_sets[@]})); then
    local slot
    slot="$(free_slot)"
    slot_of_name["${name}"]="${slot}"
    cmd=(taskset -c "${cpu_sets[${slot}]}" "${cmd[@]}")
    where=" on CPUs ${cpu_sets[${slot}]}"
  fi
  printf '=== %s: %s\n' "$(date '+%F %T')" "${cmd[*]}" >>"${log}"
  "${cmd[@]}" >>"${log}" 2>&1 &
  pid_of_name["${name}"]=$!
  echo "[sweep] ${name}: started${where} (log: ${log})"
}

# Collects the exit status of the finished run `name` and says how it ended.
finish() {
  local name="$1"
  local workdir="${sweep_dir}/${name}"
  local rc=0
  wait "${pid_of_name[${name}]}" || rc=$?
  unset 'pid_of_name[${name}]' 'slot_of_name[${name}]'
  if ((rc == 0)); then
    echo "[sweep] ${name}: $(workdir_state "${workdir}")"
  elif ((rc == BUSY_EXIT)); then
    # Another process took the workdir after the check before the launch.
    report_busy "${name}" "$(busy_pid_in_log "${workdir}/log.txt")"
  else
    failures+=("${name} (exit ${rc}, log: ${workdir}/log.txt)")
    echo "[sweep] ${name}: FAILED (exit status ${rc}); end of its log:"
    tail -n 5 "${workdir}/log.txt" | sed 's/^/    /'
  fi
}

# Waits until fewer than `limit` runs are in flight.
wait_for_slots() {
  local limit="$1" name
  while ((${#pid_of_name[@]} >= limit)); do
    for name in "${!pid_of_name[@]}"; do
      kill -0 "${pid_of_name[${name}]}" 2>/dev/null || finish "${name}"
    done
    # In the background and waited for: the wait builtin returns at once on
    # a trapped signal, while a SIGINT sent to this script alone during a
    # foreground `sleep` may be dropped (bash can take the child's normal exit
    # to mean that it handled the signal).
    if ((${#pid_of_name[@]} >= limit)); then
      sleep "${STATUS_POLL_S}" &
      wait $! || true
    fi
  done
}

# Background runs ignore Ctrl-C, so stop them explicitly, and wait until they
# have ended so that a rerun cannot overlap them.
stop_runs() {
  local pid
  trap - INT TERM
  for pid in "${pid_of_name[@]}"; do
    kill -TERM "${pid}" 2>/dev/null || true
  done
  for pid in "${pid_of_name[@]}"; do
    wait "${pid}" 2>/dev/null || true
  done
  echo "[sweep] interrupted; rerun the same command to resume." >&2
  exit 130
}
trap stop_runs INT TERM

echo "[sweep] ${#names[@]} runs into ${sweep_dir}, ${jobs} at a time."
if ((unchecked_runs)); then
  echo "[sweep] ${sweep_dir} has runs but no ${OVERRIDES_FILE} (it predates" \
    "it): launching every run, finished ones too, so that lettercnn.main" \
    "checks each against this sweep's config."
fi
for name in "${names[@]}"; do
  wait_for_slots "${jobs}"
  # Asked only once a slot is free, so that it is current at the launch.
  state="$(workdir_state "${sweep_dir}/${name}")"
  case "${state}" in
    busy\ *)
      report_busy "${name}" "${state#busy }"
      continue
      ;;
    converged | not_converged | diverged)
      if ((!unchecked_runs)); then
        echo "[sweep] ${name}: already finished (${state}), skipped."
        continue
      fi
      ;;
  esac
  launch "${name}"
done
wait_for_slots 1

# Prints the runs in SWEEP_DIR that this sweep did not launch (CONFIGS, a
# smaller grid, --task): it has not had lettercnn.main check them.
runs_not_swept() {
  local status_file name
  local -A swept=()
  for name in "${names[@]}"; do
    swept["${name}"]=1
  done
  for status_file in "${sweep_dir}"/*/status.json; do
    [[ -e "${status_file}" ]] || continue
    name="$(basename "$(dirname "${status_file}")")"
    [[ -n "${swept[${name}]:-}" ]] || echo "${name}"
  done
}

if ((unchecked_runs)); then
  others="$(runs_not_swept)"
  if ((${#failures[@]} || ${#busy[@]})); then
    echo "[sweep] not writing ${overrides_record}: not every run passed" \
      "lettercnn.main's check, so the next sweep launches them all again." >&2
  elif [[ -n "${others}" ]]; then
    echo "[sweep] not writing ${overrides_record}: this sweep did not check" \
      "${others//$'\n'/, }; a sweep of every config will." >&2
  elif record_overrides; then
    echo "[sweep] recorded the overrides in ${overrides_record}."
  else
    check_overrides # Another sweep wrote it meanwhile.
  fi
fi

report_rc=0
if ((run_report)); then
  echo "[sweep] report: ${PYTHON} -m lettercnn.report ${sweep_dir}"
  "${PYTHON}" -m lettercnn.report "${sweep_dir}" || report_rc=$?
fi

if ((${#busy[@]})); then
  echo "[sweep] ${#busy[@]} run(s) busy, being trained by another process;" \
    "rerun this command once that has ended:" >&2
  printf '  %s\n' "${busy[@]}" >&2
fi
if ((${#failures[@]})); then
  echo "[sweep] ${#failures[@]} run(s) failed:" >&2
  printf '  %s\n' "${failures[@]}" >&2
fi
if ((${#failures[@]} || ${#busy[@]})); then
  exit 1
fi
exit "${report_rc}"
