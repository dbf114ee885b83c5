"""The sweep launcher: trains every point of configs x grids x seeds, then reports.

  python -m lettercnn.sweep SWEEP_DIR [--grid FIELD=V1,V2,...]...
      [--seeds N | --seeds S1,S2,...] [-j N] [--no-pin] [--no-report]
      [--configs DIR] [--list] [--task I] [--config.FIELD=VALUE ...]

`scripts/sweep.sh` runs it with the repository on PYTHONPATH. The rules:

The points are the Cartesian product of the configs (configs/lr_*.py, or
DIR/lr_*.py with --configs DIR, DIR absolute or relative to the repository
root; or the files in the CONFIGS environment variable, space-separated, in
that order) and the grids: each --grid sweeps one config field over its values
(commas inside (), [] or quotes do not split), and --seeds N sweeps `seed`
over 0 ... N-1 (--seeds 0,3,7 over those). `lettercnn.sweep.grid` lists them
and checks every one with lettercnn.main's own parsing and config checks: a
bad grid is one error line, exit status 2, before anything runs. --list
prints the points, numbered from 0, and exits; --task I runs point I alone
(scripts/sweep_slurm.sh runs one per SLURM array task).

Each point trains into SWEEP_DIR/<name> by `$PYTHON -m lettercnn.main`
(PYTHON defaults to this interpreter), its output appended to log.txt there,
with the point's values and the --config.FIELD=VALUE overrides, which go to every
point. Runs go one at a time, or N at once with -j N; with N > 1 each of the
N slots gets its own share of the CPUs this process may use, so concurrent
runs do not fight over cores. --no-pin, or fewer CPUs than N, leaves the runs
unpinned. A point whose status.json says converged, not_converged or diverged
is skipped; an unfinished one is relaunched and resumes from its checkpoint.
A failing run does not stop the others: all failures are listed at the end.
Last, `$PYTHON -m lettercnn.report SWEEP_DIR` writes the report (--no-report
skips it). SIGINT or SIGTERM stops all runs; rerunning resumes the sweep.

A run whose workdir lock another live process holds is reported busy and not
started, and so is a run that lettercnn.main itself finds taken (exit status
75). The end lists busy runs apart from failures.

A sweep folder remembers its overrides in SWEEP_DIR/sweep_overrides.txt (one a
line, sorted, of several for one field only the last, the one lettercnn.main
uses), written by the first sweep into it; a sweep with other overrides (the
same ones in any order are fine) stops before launching anything, with exit
status 2, since skipping the finished runs would pass them off as its own. A
folder with runs but no record is checked run by run instead: the sweep
launches every run, finished ones too, so that lettercnn.main compares each
with its config, and writes the record only once every run in the folder has
passed that check (no failure, no busy run, no run outside this sweep).

Exit status: 1 when a run failed or was busy; 2 for bad arguments, a bad grid
or overrides that differ from SWEEP_DIR's; 130 after SIGINT or SIGTERM; else
the report's (0 with --no-report).
"""

import contextlib
import dataclasses
import functools
import glob
import locale
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from typing import Iterator, NamedTuple, Sequence

from absl import logging

from lettercnn import errors
from lettercnn.run import status as run_status
from lettercnn.run import workdir as workdir_guard
from lettercnn.sweep import grid

REPO_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERRIDES_FILE = 'sweep_overrides.txt'
LOG_FILE = 'log.txt'
# How often the scheduler looks for finished runs.
POLL_S = 0.2
INTERRUPTED_EXIT = 130
USAGE = ('Usage: scripts/sweep.sh SWEEP_DIR [--grid FIELD=V1,V2,...]... '
         '[--seeds N|S1,S2,...] [-j N] [--no-pin] [--no-report] '
         '[--configs DIR] [--list] [--task I] [--config.FIELD=VALUE ...]\n'
         'See docs/sweeps.md for details.')
# The error lettercnn.main prints when another process holds its workdir.
_BUSY_ERROR = re.compile(
    r'^lettercnn: error: workdir .* is in use by process ([^ ]*) .*')


class UsageError(Exception):
  """Bad arguments or overrides that differ from the folder's: exit 2."""


class Interrupted(Exception):
  """SIGINT or SIGTERM arrived: stop every run."""


def say(line: str) -> None:
  print(line, flush=True)


@dataclasses.dataclass
class Options:
  """The command line."""
  sweep_dir: str = ''
  jobs: str = '1'
  report: bool = True
  pin: bool = True
  config_dir: str = 'configs'
  grid_specs: list[str] = dataclasses.field(default_factory=list)
  seeds: str | None = None
  overrides: list[str] = dataclasses.field(default_factory=list)
  list_only: bool = False
  task: str | None = None
  help: bool = False


def _value(args: list[str], what: str) -> str:
  """Pops the value after option args[0]."""
  if len(args) < 2:
    raise UsageError(f'{args[0]} needs {what}')
  del args[0]
  return args[0]


def parse_args(argv: Sequence[str]) -> Options:
  """The options; UsageError for a malformed command line."""
  options, args = Options(), list(argv)
  while args:
    arg = args[0]
    if arg in ('-h', '--help'):
      options.help = True
      return options
    if arg in ('-j', '--jobs'):
      options.jobs = _value(args, 'a number')
    elif arg.startswith('-j'):
      options.jobs = arg[2:]
    elif arg.startswith('--jobs='):
      options.jobs = arg.removeprefix('--jobs=')
    elif arg == '--no-report':
      options.report = False
    elif arg == '--no-pin':
      options.pin = False
    elif arg == '--configs':
      options.config_dir = _value(args, 'a folder')
    elif arg.startswith('--configs='):
      options.config_dir = arg.removeprefix('--configs=')
    elif arg in ('--grid', '--seeds'):
      _add_grid(options, arg, _value(args, 'a value'))
    elif arg.startswith(('--grid=', '--seeds=')):
      _add_grid(options, *arg.split('=', 1))
    elif arg == '--list':
      options.list_only = True
    elif arg == '--task':
      options.task = _value(args, 'a point number')
    elif arg.startswith('--task='):
      options.task = arg.removeprefix('--task=')
    elif arg.startswith('--'):
      # sweep_overrides.txt holds one override a line.
      if '\n' in arg:
        raise UsageError(f'an override holds a line break: {arg}')
      options.overrides.append(arg)
    elif arg.startswith('-'):
      raise UsageError(f'unknown option {arg} (overrides look like '
                       '--config.FIELD=VALUE)')
    elif options.sweep_dir:
      raise UsageError(
          f'more than one SWEEP_DIR: {options.sweep_dir} and {arg}')
    else:
      options.sweep_dir = arg
    del args[0]
  return options


def _add_grid(options: Options, option: str, value: str) -> None:
  if option == '--grid':
    options.grid_specs.append(value)
  else:  # Of several --seeds the last counts.
    options.seeds = value


def _glob_order(paths: list[str]) -> list[str]:
  """`paths` in the order the shell lists a glob: the locale's collation."""
  with contextlib.suppress(locale.Error):
    locale.setlocale(locale.LC_COLLATE, '')
  return sorted(paths, key=locale.strxfrm)


def config_paths(config_dir: str, configs_env: str) -> list[str]:
  """CONFIGS' files, else config_dir's lr_*.py; UsageError if none."""
  configs = []
  if configs_env:
    for config in re.split('[ \t]+', configs_env.split('\n', 1)[0]):
      if not config:
        continue
      if not config.startswith('/'):
        config = os.path.join(REPO_ROOT, config)
      if not os.path.isfile(config):
        raise UsageError(f'CONFIGS names a missing file: {config}')
      configs.append(config)
  else:
    if not config_dir.startswith('/'):
      config_dir = os.path.join(REPO_ROOT, config_dir)
    if not os.path.isdir(config_dir):
      raise UsageError(f'--configs names a missing folder: {config_dir}')
    configs = _glob_order(
        glob.glob(os.path.join(glob.escape(config_dir), 'lr_*.py')))
  if not configs:
    raise UsageError(f'no configs to run ({config_dir}/lr_*.py or CONFIGS)')
  return configs


# --- The overrides record ---------------------------------------------------


def normalized_overrides(overrides: Sequence[str]) -> str:
  """The overrides as SWEEP_DIR records them: one a line, sorted by bytes, of
  several for one field only the last, so that the same overrides in another
  order compare equal."""
  last_of_field = {o.split('=', 1)[0]: o for o in overrides}
  return '\n'.join(sorted(last_of_field.values(), key=os.fsencode))


def _describe(overrides: str) -> str:
  return f"'{overrides.replace(chr(10), ' ')}'" if overrides else 'none'


def record_overrides(sweep_dir: str, overrides: str) -> bool:
  """Writes SWEEP_DIR's record unless it exists: True if this call wrote it.

  The record appears whole or not at all, and never replaces another one:
  several tasks of one SLURM array may start the same sweep at once, so it is
  written to a temporary file, then hard-linked into place, which fails when
  the name exists.
  """
  record = os.path.join(sweep_dir, OVERRIDES_FILE)
  try:
    fd, tmp = tempfile.mkstemp(prefix=f'.{OVERRIDES_FILE}.', dir=sweep_dir)
  except OSError as e:
    raise UsageError(f'cannot write in {sweep_dir}') from e
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(os.fsencode(overrides) + b'\n' if overrides else b'')
  except OSError as e:
    os.remove(tmp)
    raise UsageError(f'cannot write {tmp}') from e
  try:
    os.link(tmp, record)
  except OSError as e:
    if os.path.exists(record):
      return False
    raise UsageError(f'cannot write {record}') from e
  finally:
    os.remove(tmp)
  return True


def check_overrides(sweep_dir: str, overrides: str) -> None:
  """Raises UsageError unless SWEEP_DIR's record holds `overrides`."""
  record = os.path.join(sweep_dir, OVERRIDES_FILE)
  try:
    with open(record, 'rb') as f:
      lines = f.read().split(b'\n')
  except OSError as e:
    raise UsageError(f'cannot read {record}') from e
  if not lines[-1]:
    lines.pop()
  # Sorted again, in case someone wrote the file by hand.
  recorded = b'\n'.join(sorted(lines)).rstrip(b'\n')
  if recorded == os.fsencode(overrides):
    return
  raise UsageError(
      f'{sweep_dir} was swept with overrides '
      f'{_describe(os.fsdecode(recorded))} and this run gives '
      f'{_describe(overrides)}; use another SWEEP_DIR for other overrides (or '
      f'delete {record} if you mean to change them)')


def prepare_overrides(sweep_dir: str, overrides: str) -> bool:
  """Checks or writes SWEEP_DIR's record; True if its runs predate it.

  A folder with runs but no record predates it: its finished runs may hold
  other overrides, so the sweep launches them all and writes the record only
  once all have passed. The record is looked for again after the runs: a
  sweep writes it before launching anything, so runs found while it is still
  absent were made without one.

  Raises:
    UsageError: the record holds other overrides, or cannot be written.
  """
  record = os.path.join(sweep_dir, OVERRIDES_FILE)
  if os.path.exists(record):
    check_overrides(sweep_dir, overrides)
    return False
  if (glob.glob(os.path.join(glob.escape(sweep_dir), '*',
                             run_status.STATUS_FILE))
      and not os.path.exists(record)):
    return True
  if not record_overrides(sweep_dir, overrides):
    check_overrides(sweep_dir, overrides)  # Another sweep has just written it.
  return False


def runs_not_swept(sweep_dir: str, names: Sequence[str]) -> list[str]:
  """The runs in SWEEP_DIR outside `names`: no lettercnn.main checked them."""
  pattern = os.path.join(glob.escape(sweep_dir), '*', run_status.STATUS_FILE)
  swept = set(names)
  found = [os.path.basename(os.path.dirname(path))
           for path in _glob_order(glob.glob(pattern))
           if os.path.exists(path)]
  return [name for name in found if name not in swept]


# --- Runs ---------------------------------------------------------------------


def cpu_sets(jobs: int, pin: bool = True) -> list[list[int]]:
  """Each slot's share of the CPUs this process may use; [] leaves runs
  unpinned (pin off, one slot, or fewer CPUs than slots)."""
  if not pin or jobs < 2 or not hasattr(os, 'sched_getaffinity'):
    return []
  cpus = sorted(os.sched_getaffinity(0))
  if len(cpus) < jobs:
    return []
  return [cpus[i * len(cpus) // jobs:(i + 1) * len(cpus) // jobs]
          for i in range(jobs)]


def workdir_state(workdir: str) -> str:
  """'busy PID' while another process holds WORKDIR, else its status word.

  The status word is 'none' without status.json, 'unreadable', the status
  ('running', 'converged', ...), or 'unknown' if the folder cannot be read.
  """
  try:
    pid = workdir_guard.holder(workdir)
    if pid is not None:
      return f'busy {pid}'
    status = run_status.read(workdir)
  except run_status.UnreadableStatus:
    return 'unreadable'
  except OSError:
    return 'unknown'
  return 'none' if status is None else status['status']


def busy_pid_in_log(log: str) -> str:
  """The pid in the log's last "in use by process PID" error, or 'unknown'."""
  pid = 'unknown'
  with contextlib.suppress(OSError), open(log, errors='replace') as f:
    for line in f:
      match = _BUSY_ERROR.match(line)
      if match:
        pid = match.group(1)
  return pid


def _tail(path: str, count: int) -> list[str]:
  try:
    with open(path, 'rb') as f:
      lines = f.read().splitlines()
  except OSError:
    return []
  return [line.decode(errors='replace') for line in lines[-count:]]


def _start_child(cpus: Sequence[int] | None) -> None:
  """In a run's process before exec: as a shell's background job, it leaves
  Ctrl-C to the sweep, and it keeps to its slot's CPUs."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGQUIT, signal.SIG_IGN)
  if cpus:
    os.sched_setaffinity(0, cpus)


class _Run(NamedTuple):
  process: subprocess.Popen
  slot: int | None
  log: str


class Scheduler:
  """Runs points into SWEEP_DIR, `jobs` at a time, and tallies how they end.

  With `cpu_sets` (one CPU list per slot) each run is pinned to the CPUs of
  the slot it takes, the first no running run holds.
  """

  def __init__(self, sweep_dir: str, python: str, overrides: Sequence[str],
               jobs: int, cpu_sets: Sequence[Sequence[int]] = ()) -> None:
    self.sweep_dir = sweep_dir
    self.python = python
    self.overrides = list(overrides)
    self.jobs = jobs
    self.cpu_sets = [list(cpus) for cpus in cpu_sets]
    self.running: dict[str, _Run] = {}
    self.failures: list[str] = []
    self.busy: list[str] = []
    self.interrupted = False

  def run(self, points: Sequence[grid.Run],
          relaunch_finished: bool = False) -> None:
    """Runs every point not finished (all with `relaunch_finished`) or busy.

    Raises:
      Interrupted: `interrupted` was set; runs may still be going (`stop`).
    """
    for point in points:
      self.wait_for_slots(self.jobs)
      # Asked only once a slot is free, so that it is current at the launch.
      state = workdir_state(os.path.join(self.sweep_dir, point.name))
      if state.startswith('busy '):
        self.report_busy(point.name, state.removeprefix('busy '))
      elif state in run_status.FINISHED and not relaunch_finished:
        say(f'[sweep] {point.name}: already finished ({state}), skipped.')
      else:
        self.launch(point)
    self.wait_for_slots(1)

  def report_busy(self, name: str, pid: str) -> None:
    self.busy.append(f'{name} (process {pid})')
    say(f'[sweep] {name}: busy (process {pid} holds its workdir), not started')

  def free_slot(self) -> int:
    taken = {run.slot for run in self.running.values()}
    return next(slot for slot in range(self.jobs) if slot not in taken)

  def launch(self, point: grid.Run) -> None:
    """Starts `point`'s run, its output appended to its log.txt."""
    workdir = os.path.join(self.sweep_dir, point.name)
    log = os.path.join(workdir, LOG_FILE)
    os.makedirs(workdir, exist_ok=True)
    command = [self.python, '-m', 'lettercnn.main',
               f'--config={point.config_path}', f'--workdir={workdir}',
               *point.overrides, *self.overrides]
    slot = self.free_slot() if self.cpu_sets else None
    cpus = None if slot is None else self.cpu_sets[slot]
    with open(log, 'a') as f:
      f.write(f'=== {time.strftime("%Y-%m-%d %H:%M:%S")}: '
              f'{" ".join(command)}\n')
      f.flush()
      try:
        with warnings.catch_warnings():
          # The child only sets its signals and CPUs before exec: none of
          # the parent's threads (JAX's, once a config was checked) is used
          # in the fork, so Python's warning about them does not apply.
          warnings.filterwarnings('ignore', message=r'os\.fork\(\) was called',
                                  category=RuntimeWarning)
          process = subprocess.Popen(
              command, stdin=subprocess.DEVNULL, stdout=f,
              stderr=subprocess.STDOUT,
              preexec_fn=functools.partial(_start_child, cpus))
      except OSError as e:
        f.write(f'{e}\n')
        process = None
    if process is None:
      self.finish(point.name, log, 127)
      return
    self.running[point.name] = _Run(process, slot, log)
    where = f' on CPUs {",".join(map(str, cpus))}' if cpus else ''
    say(f'[sweep] {point.name}: started{where} (log: {log})')

  def finish(self, name: str, log: str, returncode: int) -> None:
    """Says how the run `name` ended."""
    # A run killed by signal N ends as a shell reports it: 128 + N.
    code = returncode if returncode >= 0 else 128 - returncode
    if code == 0:
      state = workdir_state(os.path.join(self.sweep_dir, name))
      if state == run_status.RUNNING:  # Stopped where --until_epoch asked.
        state = 'stopped before its last epoch, as asked'
      say(f'[sweep] {name}: {state}')
    elif code == workdir_guard.BUSY_EXIT_CODE:
      # Another process took the workdir after the check before the launch.
      self.report_busy(name, busy_pid_in_log(log))
    else:
      self.failures.append(f'{name} (exit {code}, log: {log})')
      say(f'[sweep] {name}: FAILED (exit status {code}); end of its log:')
      for line in _tail(log, 5):
        say(f'    {line}')

  def wait_for_slots(self, limit: int) -> None:
    """Waits until fewer than `limit` runs are in flight."""
    while True:
      if self.interrupted:
        raise Interrupted
      for name, run in list(self.running.items()):
        returncode = run.process.poll()
        if returncode is not None:
          del self.running[name]
          self.finish(name, run.log, returncode)
      if len(self.running) < limit:
        return
      time.sleep(POLL_S)

  def stop(self) -> None:
    """Stops every run and waits until they have ended, so that a rerun
    cannot overlap them."""
    for run in self.running.values():
      run.process.terminate()
    for run in self.running.values():
      run.process.wait()
    self.running.clear()


@contextlib.contextmanager
def interruptible(scheduler: Scheduler) -> Iterator[None]:
  """SIGINT and SIGTERM set `scheduler.interrupted`; then they kill at once."""

  def handle(signum: int, frame: object) -> None:
    del frame
    for other in (signal.SIGINT, signal.SIGTERM):
      signal.signal(other, signal.SIG_DFL)
    scheduler.interrupted = True

  previous = {s: signal.signal(s, handle)
              for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for signum, handler in previous.items():
      if signal.getsignal(signum) is handle:
        signal.signal(signum, handler)


# --- The command --------------------------------------------------------------


def _check_options(options: Options, python: str) -> None:
  if not re.fullmatch('[1-9][0-9]*', options.jobs):
    raise UsageError(f"-j needs a positive integer, not '{options.jobs}'")
  if options.task is not None and not re.fullmatch('[0-9]+', options.task):
    raise UsageError(
        f"--task needs a point number (0, 1, ...), not '{options.task}'")
  if shutil.which(python) is None:
    raise UsageError(f"no Python interpreter '{python}'; set PYTHON")


def _points(options: Options, configs: list[str]) -> list[grid.Run] | None:
  """The sweep's points, or None after the bad grid's error line."""
  # JAX's "no GPU/TPU found" warning would precede the sweep's first line.
  logging.set_verbosity(logging.ERROR)
  try:
    return grid.sweep_points(configs, options.grid_specs, options.seeds,
                             options.overrides)
  except errors.InputError as e:
    print(f'sweep: error: {e}', file=sys.stderr)
  except Exception:  # pylint: disable=broad-except
    traceback.print_exc()
  return None


def _record_checked_runs(scheduler: Scheduler, overrides: str,
                         names: Sequence[str]) -> None:
  """Writes the record of a folder whose runs predate it, if all passed."""
  sweep_dir = scheduler.sweep_dir
  record = os.path.join(sweep_dir, OVERRIDES_FILE)
  others = runs_not_swept(sweep_dir, names)
  if scheduler.failures or scheduler.busy:
    print(f'[sweep] not writing {record}: not every run passed '
          "lettercnn.main's check, so the next sweep launches them all "
          'again.', file=sys.stderr)
  elif others:
    print(f'[sweep] not writing {record}: this sweep did not check '
          f'{", ".join(others)}; a sweep of every config will.',
          file=sys.stderr)
  elif record_overrides(sweep_dir, overrides):
    say(f'[sweep] recorded the overrides in {record}.')
  else:
    check_overrides(sweep_dir, overrides)  # Another sweep wrote it meanwhile.


def _print_outcome(scheduler: Scheduler) -> None:
  if scheduler.busy:
    print(f'[sweep] {len(scheduler.busy)} run(s) busy, being trained by '
          'another process; rerun this command once that has ended:',
          file=sys.stderr)
    for line in scheduler.busy:
      print(f'  {line}', file=sys.stderr)
  if scheduler.failures:
    print(f'[sweep] {len(scheduler.failures)} run(s) failed:', file=sys.stderr)
    for line in scheduler.failures:
      print(f'  {line}', file=sys.stderr)


def sweep(options: Options, points: Sequence[grid.Run], python: str) -> int:
  """Runs the points into options.sweep_dir, then the report: exit status.

  Raises:
    UsageError: the folder's record holds other overrides.
  """
  os.makedirs(options.sweep_dir, exist_ok=True)
  sweep_dir = os.path.abspath(options.sweep_dir)
  overrides = normalized_overrides(options.overrides)
  unchecked_runs = prepare_overrides(sweep_dir, overrides)
  jobs = int(options.jobs)
  scheduler = Scheduler(sweep_dir, python, options.overrides, jobs,
                        cpu_sets(jobs, options.pin))
  with interruptible(scheduler):
    try:
      say(f'[sweep] {len(points)} runs into {sweep_dir}, {jobs} at a time.')
      if unchecked_runs:
        say(f'[sweep] {sweep_dir} has runs but no {OVERRIDES_FILE} (it '
            'predates it): launching every run, finished ones too, so that '
            "lettercnn.main checks each against this sweep's config.")
      scheduler.run(points, relaunch_finished=unchecked_runs)
      if unchecked_runs:
        _record_checked_runs(scheduler, overrides, [p.name for p in points])
      report_code = 0
      if options.report:
        say(f'[sweep] report: {python} -m lettercnn.report {sweep_dir}')
        report_code = subprocess.run(
            [python, '-m', 'lettercnn.report', sweep_dir],
            check=False).returncode
        report_code = report_code if report_code >= 0 else 128 - report_code
      if scheduler.interrupted:
        raise Interrupted
    except Interrupted:
      scheduler.stop()
      print('[sweep] interrupted; rerun the same command to resume.',
            file=sys.stderr)
      return INTERRUPTED_EXIT
  _print_outcome(scheduler)
  return 1 if scheduler.failures or scheduler.busy else report_code


def set_pythonpath() -> None:
  """Puts the repository first on the runs' path: `python -m lettercnn.main`
  and the configs' `from configs import default` need it."""
  path = os.environ.get('PYTHONPATH', '')
  if path.split(':')[0] != REPO_ROOT:
    os.environ['PYTHONPATH'] = f'{REPO_ROOT}:{path}' if path else REPO_ROOT


def main(argv: Sequence[str]) -> int:
  """`python -m lettercnn.sweep ARGS...`: the exit status."""
  python = os.environ.get('PYTHON') or sys.executable
  try:
    options = parse_args(argv)
    if options.help:
      say(USAGE)
      return 0
    if not options.sweep_dir:
      print(USAGE, file=sys.stderr)
      return 2
    _check_options(options, python)
    configs = config_paths(options.config_dir, os.environ.get('CONFIGS', ''))
    set_pythonpath()
    points = _points(options, configs)
    if points is None:
      return 2
    if options.list_only:
      for i, point in enumerate(points):
        say(f'{i}\t{point.name}')
      return 0
    if options.task is not None:
      if int(options.task) >= len(points):
        raise UsageError(f'task {options.task} but only {len(points)} points:'
                         f' use --array=0-{len(points) - 1}')
      points = [points[int(options.task)]]
    return sweep(options, points, python)
  except UsageError as e:
    print(f'sweep.sh: error: {e}', file=sys.stderr)
    return 2
