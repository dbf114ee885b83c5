"""Tests of scripts/sweep.sh and scripts/sweep_slurm.sh.

The fast tests replace the trainer with a fake interpreter (PYTHON) that
records its arguments and writes status.json; one end-to-end test runs a tiny
real sweep through lettercnn.main and lettercnn.report.
"""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from PIL import Image
import pytest
from run_helpers import allowed_cpus
from run_helpers import run_selected_cases

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SWEEP = REPO_ROOT / 'scripts' / 'sweep.sh'
SLURM_SWEEP = REPO_ROOT / 'scripts' / 'sweep_slurm.sh'

# Stands in for `python`: `-m lettercnn.main` records its arguments, times and
# the CPUs it may run on in the workdir; if the config name contains "busy"
# it then exits 75 like a run whose workdir process 4242 holds; otherwise it
# writes status "running", sleeps, then fails if the config name contains
# "fail" or writes status "converged"; `-m lettercnn.report` just says so;
# anything else (scripts/sweep.sh's `-m lettercnn.sweep`) runs Python.
FAKE_PYTHON = """#!/usr/bin/env bash
set -eu
if [[ "$1 $2" == "-m lettercnn.main" ]]; then
  shift 2
  for arg in "$@"; do
    case "${arg}" in
      --workdir=*) workdir="${arg#--workdir=}" ;;
      --config=*) config="${arg#--config=}" ;;
    esac
  done
  echo $$ >"${workdir}/pid"
  grep Cpus_allowed_list /proc/$$/status | cut -f2 >"${workdir}/cpus"
  printf '%s\\n' "$@" >"${workdir}/args.txt"
  echo "PYTHONPATH=${PYTHONPATH}" >>"${workdir}/args.txt"
  case "$(basename "${config}")" in
    *busy*)
      echo "lettercnn: error: workdir ${workdir} is in use by process 4242" \
        "(it holds ${workdir}/.lock); wait for it to end, or pass another" \
        "--workdir" >&2
      exit 75
      ;;
  esac
  date +%s.%N >"${workdir}/start"
  echo '{"status": "running", "config": {}}' >"${workdir}/status.json"
  sleep "${FAKE_SECONDS:-0}"
  date +%s.%N >"${workdir}/end"
  case "$(basename "${config}")" in
    *fail*) echo "training blew up"; exit 3 ;;
  esac
  echo '{"status": "converged", "config": {}}' >"${workdir}/status.json"
  exit 0
fi
if [[ "$1 $2" == "-m lettercnn.report" ]]; then
  echo "fake report of $3"
  exit 0
fi
exec REAL_PYTHON "$@"
"""


def _write_fake_python(folder: pathlib.Path) -> pathlib.Path:
  path = folder / 'fake_python'
  path.write_text(FAKE_PYTHON.replace('REAL_PYTHON', sys.executable))
  path.chmod(0o755)
  return path


@pytest.fixture
def fake_python(tmp_path) -> pathlib.Path:
  return _write_fake_python(tmp_path)


# A config file the sweep's grid check accepts; the fake trainer only reads
# its name.
DEFAULT_CONFIG = """from configs import default


def get_config():
  return default.get_config()
"""


def _write_configs(folder: pathlib.Path) -> list[pathlib.Path]:
  config_dir = folder / 'configs'
  config_dir.mkdir()
  paths = [config_dir / f'{name}.py' for name in ('lr_a', 'lr_b', 'lr_fail')]
  for path in paths:
    path.write_text(DEFAULT_CONFIG)
  return paths


@pytest.fixture
def configs(tmp_path) -> list[pathlib.Path]:
  """Three configs; training the last one fails."""
  return _write_configs(tmp_path)


def run_sweep(args, env_updates: dict[str, str], cwd=REPO_ROOT,
              script=SWEEP, timeout=60) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(env_updates)
  return subprocess.run(['bash', str(script), *map(str, args)], cwd=cwd,
                        env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def write_status(workdir: pathlib.Path, status: str) -> None:
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'status.json').write_text(
      json.dumps({'status': status, 'config': {}}))


def read_times(workdir: pathlib.Path) -> tuple[float, float]:
  return (float((workdir / 'start').read_text()),
          float((workdir / 'end').read_text()))


def test_runs_all_configs_collects_failures_and_reports(
    tmp_path, fake_python, configs):
  sweep_dir = tmp_path / 'sweep'
  result = run_sweep(
      [sweep_dir, '--config.num_epochs=2', '--config.data_dir=/d'],
      {'PYTHON': str(fake_python), 'CONFIGS': ' '.join(map(str, configs))})

  assert result.returncode == 1, result.stderr
  for stem in ('lr_a', 'lr_b', 'lr_fail'):
    args = (sweep_dir / stem / 'args.txt').read_text().splitlines()
    assert args[:4] == [
        f'--config={tmp_path}/configs/{stem}.py',
        f'--workdir={sweep_dir}/{stem}',
        '--config.num_epochs=2', '--config.data_dir=/d']
    assert args[4].startswith(f'PYTHONPATH={REPO_ROOT}')
  assert 'training blew up' in (sweep_dir / 'lr_fail' / 'log.txt').read_text()
  assert '[sweep] lr_a: converged' in result.stdout
  assert f'fake report of {sweep_dir}' in result.stdout
  assert '1 run(s) failed' in result.stderr
  assert 'lr_fail (exit 3' in result.stderr
  # Sequential by default.
  assert read_times(sweep_dir / 'lr_a')[1] <= read_times(
      sweep_dir / 'lr_b')[0]


def test_skips_finished_runs_and_relaunches_unfinished(
    tmp_path, fake_python, configs):
  sweep_dir = tmp_path / 'sweep'
  (sweep_dir).mkdir()
  (sweep_dir / 'sweep_overrides.txt').write_text('')
  for stem, status in (('lr_a', 'diverged'), ('lr_b', 'running')):
    write_status(sweep_dir / stem, status)
  result = run_sweep([sweep_dir, '--no-report'], {
      'PYTHON': str(fake_python),
      'CONFIGS': ' '.join(map(str, configs[:2]))})

  assert result.returncode == 0, result.stderr
  assert 'lr_a: already finished (diverged), skipped' in result.stdout
  assert not (sweep_dir / 'lr_a' / 'args.txt').exists()
  assert (sweep_dir / 'lr_b' / 'args.txt').exists()
  assert 'fake report' not in result.stdout


def _args_of(workdir: pathlib.Path) -> list[str]:
  """The fake trainer's arguments, less PYTHONPATH's line."""
  return (workdir / 'args.txt').read_text().splitlines()[:-1]


def test_grid_runs_every_point_in_a_workdir_named_by_its_values(
    tmp_path, fake_python, configs):
  sweep_dir = tmp_path / 'sweep'
  result = run_sweep(
      [sweep_dir, '--no-report', '--grid', 'batch_size=1,8', '--seeds', '2',
       '--config.num_epochs=3'],
      {'PYTHON': str(fake_python), 'CONFIGS': ' '.join(map(str, configs[:2]))})

  assert result.returncode == 0, result.stderr
  points = [f'{stem},batch_size={b},seed={s}'
            for stem in ('lr_a', 'lr_b') for b in (1, 8) for s in (0, 1)]
  assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == sorted(
      points)
  assert _args_of(sweep_dir / 'lr_b,batch_size=8,seed=1') == [
      f'--config={configs[1]}', f'--workdir={sweep_dir}/lr_b,batch_size=8,seed=1',
      '--config.batch_size=8', '--config.seed=1', '--config.num_epochs=3']
  # Grid values are in the names; only the fixed overrides are recorded.
  assert (sweep_dir / 'sweep_overrides.txt').read_text() == (
      '--config.num_epochs=3\n')
  # In --list's order, one after another: configs outermost, seeds innermost.
  starts = [read_times(sweep_dir / point)[0] for point in points]
  assert starts == sorted(starts)


def test_a_grown_grid_trains_only_its_new_points(tmp_path, fake_python,
                                                 configs):
  sweep_dir = tmp_path / 'sweep'
  env = {'PYTHON': str(fake_python), 'CONFIGS': str(configs[0])}
  first = run_sweep([sweep_dir, '--no-report', '--grid', 'batch_size=1,8'], env)
  assert first.returncode == 0, first.stderr
  (sweep_dir / 'lr_a,batch_size=8' / 'args.txt').unlink()

  grown = run_sweep(
      [sweep_dir, '--no-report', '--grid', 'batch_size=1,8,32'], env)

  assert grown.returncode == 0, grown.stderr
  assert grown.stdout.count('already finished (converged), skipped') == 2
  assert not (sweep_dir / 'lr_a,batch_size=8' / 'args.txt').exists()
  assert (sweep_dir / 'lr_a,batch_size=32' / 'args.txt').exists()


@pytest.fixture(scope='module')
def bad_grid_sweeps(request, tmp_path_factory):
  """Each selected case's sweep of lr_a, by the fake trainer, two at a time.

  Maps the case's grid arguments (a tuple) to (its SWEEP_DIR, the sweep).
  """
  folder = tmp_path_factory.mktemp('bad_grid')
  fake_python, configs = _write_fake_python(folder), _write_configs(folder)

  def run(grid):
    sweep_dir = tmp_path_factory.mktemp('bad_grid_sweep') / 'sweep'
    return sweep_dir, run_sweep(
        [sweep_dir, *grid],
        {'PYTHON': str(fake_python), 'CONFIGS': str(configs[0])})

  return run_selected_cases(request,
                            'test_bad_grid_is_one_line_before_anything_runs',
                            'grid', run)


@pytest.mark.parametrize('grid, message', [
    (['--grid', 'batch_sise=1,8'],
     "--grid batch_sise: unknown config field (see configs/default.py); did "
     "you mean batch_size?"),
    (['--grid', 'batch_size=1,0'],
     'lr_a,batch_size=0: batch_size=0 must be an integer >= 1'),
    (['--grid', 'batch_size=1,x'],
     "lr_a,batch_size=x: flag --config.batch_size=x: invalid literal for int()"),
    (['--grid', 'optimizer=sgd,adamw'],
     "lr_a,optimizer=adamw: optimizer='adamw' is not one of"),
    (['--grid', 'batch_size='], '--grid batch_size= gives no values'),
    (['--grid', 'batch_size=1,,8'], "--grid 'batch_size=1,,8' has an empty value"),
    (['--grid', 'batch_size=8,8'], "--grid batch_size lists '8' more than once"),
    (['--grid', 'batch_size'], "--grid 'batch_size' must look like FIELD=V1,V2"),
    (['--seeds', '0'], '--seeds 0 must be at least 1'),
    (['--seeds', '1,one'], "--seeds '1,one' must be a count N or a list"),
    (['--seeds', '2', '--grid', 'seed=4,5'],
     '--grid seed and --seeds given more than once'),
    (['--grid', 'num_epochs=1,2', '--config.num_epochs=3'],
     'num_epochs is both swept (--grid or --seeds) and fixed'),
])
def test_bad_grid_is_one_line_before_anything_runs(bad_grid_sweeps, grid,
                                                    message):
  sweep_dir, result = bad_grid_sweeps[tuple(grid)]

  assert result.returncode == 2
  assert result.stderr.startswith(f'sweep: error: {message}'), result.stderr
  assert result.stderr.count('\n') == 1
  assert not sweep_dir.exists()


def test_list_numbers_the_points_and_task_runs_one(tmp_path, fake_python,
                                                   configs):
  sweep_dir = tmp_path / 'sweep'
  env = {'PYTHON': str(fake_python), 'CONFIGS': ' '.join(map(str, configs[:2]))}
  listing = run_sweep([sweep_dir, '--seeds', '0,7', '--list'], env)
  assert listing.returncode == 0, listing.stderr
  assert listing.stdout == ('0\tlr_a,seed=0\n1\tlr_a,seed=7\n'
                            '2\tlr_b,seed=0\n3\tlr_b,seed=7\n')
  assert not sweep_dir.exists()

  task = run_sweep([sweep_dir, '--seeds', '0,7', '--task', '2', '--no-report'],
                   env)
  assert task.returncode == 0, task.stderr
  assert [p.name for p in sweep_dir.iterdir() if p.is_dir()] == ['lr_b,seed=0']


def test_parallel_runs_overlap(tmp_path, fake_python, configs):
  sweep_dir = tmp_path / 'sweep'
  result = run_sweep([sweep_dir, '-j', '2', '--no-report'], {
      'PYTHON': str(fake_python), 'FAKE_SECONDS': '3',
      'CONFIGS': ' '.join(map(str, configs[:2]))})

  assert result.returncode == 0, result.stderr
  start_a, end_a = read_times(sweep_dir / 'lr_a')
  start_b, end_b = read_times(sweep_dir / 'lr_b')
  # Launched one after the other, each records its start once Python is up,
  # in either order: the two ran at once if each started before the other
  # ended.
  assert start_a < end_b and start_b < end_a


def test_parallel_runs_get_disjoint_cpus(tmp_path, fake_python, configs):
  if len(os.sched_getaffinity(0)) < 2:
    pytest.skip('pinning two runs apart needs two CPUs')
  sweep_dir = tmp_path / 'sweep'
  result = run_sweep([sweep_dir, '-j', '2', '--no-report'], {
      'PYTHON': str(fake_python), 'FAKE_SECONDS': '2',
      'CONFIGS': ' '.join(map(str, configs))})

  assert 'started on CPUs' in result.stdout, result.stdout
  runs = [sweep_dir / stem for stem in ('lr_a', 'lr_b', 'lr_fail')]
  for i, run in enumerate(runs):
    assert allowed_cpus(run) and allowed_cpus(run) <= os.sched_getaffinity(0)
    for other in runs[i + 1:]:
      start, end = read_times(run)
      other_start, other_end = read_times(other)
      if start < other_end and other_start < end:  # They ran at once.
        assert not allowed_cpus(run) & allowed_cpus(other), (run.name, other.name)
  # The third run reused the slot of whichever finished first.
  assert allowed_cpus(runs[2]) in (allowed_cpus(runs[0]), allowed_cpus(runs[1]))


def test_no_pin_leaves_runs_all_cpus(tmp_path, fake_python, configs):
  sweep_dir = tmp_path / 'sweep'
  result = run_sweep([sweep_dir, '-j', '2', '--no-pin', '--no-report'], {
      'PYTHON': str(fake_python), 'CONFIGS': ' '.join(map(str, configs[:2]))})

  assert result.returncode == 0, result.stderr
  assert 'started on CPUs' not in result.stdout
  for stem in ('lr_a', 'lr_b'):
    assert allowed_cpus(sweep_dir / stem) == os.sched_getaffinity(0)


def test_interrupt_stops_runs(tmp_path, fake_python, configs):
  sweep_dir = tmp_path / 'sweep'
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(PYTHON=str(fake_python), FAKE_SECONDS='20',
             CONFIGS=' '.join(map(str, configs[:2])))
  sweep = subprocess.Popen(['bash', str(SWEEP), str(sweep_dir), '-j', '2'],
                           env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  pid_files = [sweep_dir / stem / 'pid' for stem in ('lr_a', 'lr_b')]
  deadline = time.monotonic() + 30
  while not all(p.exists() and p.read_text() for p in pid_files):
    assert time.monotonic() < deadline, 'runs did not start'
    time.sleep(0.2)
  # SIGTERM runs the same trap as Ctrl-C's SIGINT. A SIGINT sent to the script
  # alone was lost twice in full clean-clone suites (never when this file ran
  # alone), so the test sends the signal that bash never drops.
  sweep.send_signal(signal.SIGTERM)
  _, err = sweep.communicate(timeout=30)

  assert sweep.returncode == 130
  assert 'interrupted' in err
  for path in pid_files:
    run_pid = int(path.read_text())
    with pytest.raises(ProcessLookupError):
      os.kill(run_pid, 0)

# Holds the flock on argv[1], a workdir's .lock, as a run does, with its pid
# in the file; prints "locked" once it holds it, then sleeps.
HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def hold_lock():
  """Holds a workdir's lock from a child process until the test ends."""
  holders = []

  def hold(workdir: pathlib.Path) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, '-c', HOLD_LOCK, str(workdir / '.lock')],
        stdout=subprocess.PIPE, text=True)
    holders.append(holder)
    assert holder.stdout.readline() == 'locked\n'
    return holder

  yield hold
  for holder in holders:
    holder.kill()
    holder.wait()
    holder.stdout.close()


def test_point_held_by_another_process_is_busy_and_not_started(
    tmp_path, fake_python, configs, hold_lock):
  sweep_dir = tmp_path / 'sweep'
  env = {'PYTHON': str(fake_python),
         'CONFIGS': ' '.join(map(str, configs[:2]))}
  holder = hold_lock(sweep_dir / 'lr_a')
  result = run_sweep([sweep_dir, '--no-report'], env)

  assert result.returncode == 1, result.stdout + result.stderr
  assert (f'[sweep] lr_a: busy (process {holder.pid} holds its workdir), '
          'not started') in result.stdout
  assert not (sweep_dir / 'lr_a' / 'pid').exists()
  assert not (sweep_dir / 'lr_a' / 'args.txt').exists()
  assert '[sweep] lr_b: converged' in result.stdout
  assert 'FAILED' not in result.stdout
  assert 'failed' not in result.stderr
  assert '1 run(s) busy, being trained by another process' in result.stderr
  assert f'  lr_a (process {holder.pid})' in result.stderr
  assert 'rerun this command once that has ended' in result.stderr

  # Once the other process has ended, rerunning the sweep trains the point.
  holder.kill()
  holder.wait()
  rerun = run_sweep([sweep_dir, '--no-report'], env)
  assert rerun.returncode == 0, rerun.stdout + rerun.stderr
  assert (sweep_dir / 'lr_a' / 'args.txt').exists()
  assert 'lr_b: already finished (converged), skipped' in rerun.stdout


def test_run_that_finds_its_workdir_taken_is_busy_not_failed(
    tmp_path, fake_python, configs):
  busy_config = configs[0].with_name('lr_busy.py')
  busy_config.write_text(DEFAULT_CONFIG)
  sweep_dir = tmp_path / 'sweep'
  result = run_sweep([sweep_dir, '--no-report'], {
      'PYTHON': str(fake_python),
      'CONFIGS': f'{busy_config} {configs[0]}'})

  assert result.returncode == 1, result.stdout + result.stderr
  assert (sweep_dir / 'lr_busy' / 'args.txt').exists()  # It was launched.
  assert ('[sweep] lr_busy: busy (process 4242 holds its workdir), '
          'not started') in result.stdout
  assert '[sweep] lr_a: converged' in result.stdout
  assert 'FAILED' not in result.stdout
  assert 'failed' not in result.stderr
  assert '  lr_busy (process 4242)' in result.stderr


def _snapshot(folder: pathlib.Path) -> dict[str, tuple[int, bytes]]:
  """Every path under `folder` (itself too): its mtime and a file's bytes."""
  return {
      str(path.relative_to(folder)): (
          path.stat().st_mtime_ns,
          b'' if path.is_dir() else path.read_bytes())
      for path in [folder, *folder.rglob('*')]}


def test_sweep_folder_refuses_other_overrides(tmp_path, fake_python, configs):
  sweep_dir = tmp_path / 'sweep'
  record = sweep_dir / 'sweep_overrides.txt'
  env = {'PYTHON': str(fake_python),
         'CONFIGS': ' '.join(map(str, configs[:2]))}
  first = run_sweep(
      [sweep_dir, '--no-report', '--config.seed=1', '--config.num_epochs=10'],
      env)
  assert first.returncode == 0, first.stdout + first.stderr
  assert record.read_text() == '--config.num_epochs=10\n--config.seed=1\n'
  before = _snapshot(sweep_dir)

  other = run_sweep(
      [sweep_dir, '--no-report', '--config.seed=1', '--config.num_epochs=20'],
      env)
  assert other.returncode == 2
  assert other.stdout == ''
  assert other.stderr == (
      f"sweep.sh: error: {sweep_dir} was swept with overrides "
      "'--config.num_epochs=10 --config.seed=1' and this run gives "
      "'--config.num_epochs=20 --config.seed=1'; use another SWEEP_DIR for "
      f"other overrides (or delete {record} if you mean to change them)\n")
  none = run_sweep([sweep_dir, '--no-report'], env)
  assert none.returncode == 2
  assert none.stdout == ''
  assert "and this run gives none; use another SWEEP_DIR" in none.stderr
  assert len(none.stderr.splitlines()) == 1
  assert _snapshot(sweep_dir) == before  # Nothing launched or written.

  # The same overrides in another order, or with a field given twice (the
  # last counts), are the same sweep.
  for overrides in (['--config.num_epochs=10', '--config.seed=1'],
                    ['--config.seed=5', '--config.num_epochs=10',
                     '--config.seed=1']):
    same = run_sweep([sweep_dir, '--no-report', *overrides], env)
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.count('already finished (converged), skipped') == 2
  assert record.read_text() == '--config.num_epochs=10\n--config.seed=1\n'


def test_sweep_folder_without_overrides_refuses_some(
    tmp_path, fake_python, configs):
  sweep_dir = tmp_path / 'sweep'
  env = {'PYTHON': str(fake_python), 'CONFIGS': str(configs[0])}
  assert run_sweep([sweep_dir, '--no-report'], env).returncode == 0
  assert (sweep_dir / 'sweep_overrides.txt').read_text() == ''

  result = run_sweep([sweep_dir, '--no-report', '--config.seed=1'], env)
  assert result.returncode == 2
  assert (f"{sweep_dir} was swept with overrides none and this run gives "
          "'--config.seed=1';") in result.stderr


@pytest.mark.parametrize('attempt', range(3))  # Races are won by chance.
def test_concurrent_sweeps_into_a_new_folder_keep_one_record(
    tmp_path, fake_python, configs, attempt):
  """Sweeps that start at once (a SLURM array) agree on the first record."""
  del attempt
  sweep_dir = tmp_path / 'sweep'
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(PYTHON=str(fake_python), CONFIGS=str(configs[0]))
  # Each sweep waits on the FIFO, so all start when it is opened and closed.
  start = tmp_path / 'start'
  os.mkfifo(start)
  sweeps = [
      subprocess.Popen(
          ['bash', '-c', 'read -r _ <"$1" || true; shift; exec bash "$@"', '_',
           str(start), str(SWEEP), str(sweep_dir), '--no-report',
           f'--config.seed={seed}'],
          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
      for seed in range(8)]
  time.sleep(0.5)  # Until every sweep waits on the FIFO.
  with open(start, 'w'):
    pass
  codes = [sweep.wait(timeout=60) for sweep in sweeps]

  assert sorted(codes) == [0] + [2] * 7, codes
  assert (sweep_dir / 'sweep_overrides.txt').read_text() == (
      f'--config.seed={codes.index(0)}\n')
  assert sorted(p.name for p in sweep_dir.iterdir()) == [
      'lr_a', 'sweep_overrides.txt']  # No temporary file left behind.


def test_folder_from_before_the_record_checks_every_run_then_records(
    tmp_path, fake_python, configs):
  sweep_dir = tmp_path / 'sweep'
  for stem in ('lr_a', 'lr_b'):
    write_status(sweep_dir / stem, 'converged')
  env = {'PYTHON': str(fake_python),
         'CONFIGS': ' '.join(map(str, configs[:2]))}
  args = [sweep_dir, '--no-report', '--config.num_epochs=10']
  result = run_sweep(args, env)

  assert result.returncode == 0, result.stdout + result.stderr
  assert 'launching every run, finished ones too' in result.stdout
  assert 'already finished' not in result.stdout
  for stem in ('lr_a', 'lr_b'):  # Launched, so lettercnn.main checked them.
    assert '--config.num_epochs=10' in (
        sweep_dir / stem / 'args.txt').read_text()
  assert (sweep_dir / 'sweep_overrides.txt').read_text() == (
      '--config.num_epochs=10\n')

  rerun = run_sweep(args, env)
  assert rerun.returncode == 0, rerun.stdout + rerun.stderr
  assert rerun.stdout.count('already finished (converged), skipped') == 2


@pytest.mark.parametrize('stems, message', [
    (('lr_a', 'lr_fail'), 'not every run passed'),
    (('lr_a',), 'this sweep did not check lr_b'),
])
def test_folder_from_before_the_record_stays_unrecorded_until_all_pass(
    tmp_path, fake_python, configs, stems, message):
  sweep_dir = tmp_path / 'sweep'
  for stem in ('lr_a', 'lr_b'):
    write_status(sweep_dir / stem, 'converged')
  env = {'PYTHON': str(fake_python), 'CONFIGS': ' '.join(
      str(c) for c in configs if c.stem in stems)}
  for _ in range(2):  # Each sweep launches the finished lr_a again.
    (sweep_dir / 'lr_a' / 'args.txt').unlink(missing_ok=True)
    result = run_sweep([sweep_dir, '--no-report'], env)
    assert result.returncode == (1 if 'lr_fail' in stems else 0), (
        result.stdout + result.stderr)
    assert message in result.stderr
    assert (sweep_dir / 'lr_a' / 'args.txt').exists()
    assert not (sweep_dir / 'sweep_overrides.txt').exists()


def test_configs_option_sweeps_that_folders_lr_files(tmp_path, fake_python,
                                                      configs):
  (configs[0].parent / 'default.py').write_text('# not a sweep point\n')
  sweep_dir = tmp_path / 'sweep'
  result = run_sweep([sweep_dir, '--no-report', '--configs', configs[0].parent],
                     {'PYTHON': str(fake_python)})

  assert result.returncode == 1, result.stderr  # lr_fail fails.
  assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == [
      'lr_a', 'lr_b', 'lr_fail']
  args = (sweep_dir / 'lr_a' / 'args.txt').read_text().splitlines()
  assert args[0] == f'--config={configs[0]}'


@pytest.mark.parametrize('args, env, message', [
    ([], {}, 'Usage:'),
    (['a', 'b'], {}, 'more than one SWEEP_DIR'),
    (['a', '-j', '0'], {}, '-j needs a positive integer'),
    (['a', '-x'], {}, 'unknown option -x'),
    (['a', '--config.name=x\ny'], {}, 'an override holds a line break'),
    (['a'], {'CONFIGS': 'configs/lr_nope.py'}, 'CONFIGS names a missing file'),
    (['a', '--configs', 'configs/nope'], {}, '--configs names a missing folder'),
    (['a'], {'PYTHON': 'no-such-python'}, "no Python interpreter"),
])
def test_bad_arguments(tmp_path, args, env, message):
  result = run_sweep(args, env, cwd=tmp_path)
  assert result.returncode == 2
  assert message in result.stderr
  assert not (tmp_path / 'a').exists()


def test_slurm_task_runs_its_point(tmp_path, fake_python, configs):
  sweep_dir = tmp_path / 'sweep'
  env = {'PYTHON': str(fake_python), 'SLURM_ARRAY_TASK_ID': '3',
         'CONFIGS': ' '.join(map(str, configs))}
  grid = ['--grid', 'batch_size=1,8', '--config.num_epochs=3']
  result = run_sweep([sweep_dir, *grid], env, script=SLURM_SWEEP)

  assert result.returncode == 0, result.stderr
  assert sorted(p.name for p in sweep_dir.iterdir()) == [
      'lr_b,batch_size=8', 'sweep_overrides.txt']
  assert _args_of(sweep_dir / 'lr_b,batch_size=8')[2:] == [
      '--config.batch_size=8', '--config.num_epochs=3']
  assert 'fake report' not in result.stdout

  env['SLURM_ARRAY_TASK_ID'] = '6'
  result = run_sweep([sweep_dir, *grid], env, script=SLURM_SWEEP)
  assert result.returncode == 2
  assert 'task 6 but only 6 points: use --array=0-5' in result.stderr


def test_slurm_task_default_configs_are_the_sorted_lr_files(
    tmp_path, fake_python):
  sweep_dir = tmp_path / 'sweep'
  expected = sorted(p.stem for p in (REPO_ROOT / 'configs').glob('lr_*.py'))
  result = run_sweep([sweep_dir], {
      'PYTHON': str(fake_python), 'SLURM_ARRAY_TASK_ID': '0',
      'SLURM_SUBMIT_DIR': str(REPO_ROOT)}, cwd=tmp_path, script=SLURM_SWEEP)

  assert result.returncode == 0, result.stderr
  assert [p.name for p in sweep_dir.iterdir() if p.is_dir()] == [expected[0]]


# --- End to end -----------------------------------------------------------

DIVERGING_CONFIG = '''"""A learning rate no network survives."""
from configs import default


def get_config():
  config = default.get_config()
  config.learning_rate = 100.0
  return config
'''
TINY = ['--config.examples_per_class=8', '--config.num_epochs=2',
        '--config.image_size=28', '--config.log_every_steps=4',
        '--config.num_devices=1']


def test_tiny_real_sweep(tmp_path):
  diverging = tmp_path / 'lr_1e2.py'
  diverging.write_text(DIVERGING_CONFIG)
  sweep_dir = tmp_path / 'sweep'
  env = {'PYTHON': sys.executable,
         'CONFIGS': f'configs/lr_1e-4.py {diverging}'}
  args = [sweep_dir, '-j', '2', '--seeds', '0,1', *TINY,
          f'--config.data_dir={tmp_path}/data']
  result = run_sweep(args, env, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr

  names = ['lr_1e2,seed=0', 'lr_1e2,seed=1', 'lr_1e-4,seed=0', 'lr_1e-4,seed=1']
  statuses = {name: json.loads((sweep_dir / name / 'status.json').read_text())
              for name in names}
  for name in names[:2]:
    assert statuses[name]['status'] == 'diverged'
  for name, seed in (('lr_1e-4,seed=0', 0), ('lr_1e-4,seed=1', 1)):
    assert statuses[name]['status'] in ('converged', 'not_converged')
    assert statuses[name]['epoch'] == 2
    assert statuses[name]['config']['seed'] == seed
  # The seeds start from different parameters.
  assert (statuses['lr_1e-4,seed=0']['params_sha256']
          != statuses['lr_1e-4,seed=1']['params_sha256'])

  with (sweep_dir / 'summary.csv').open(newline='') as f:
    rows = list(csv.DictReader(f))
  assert [r['run'] for r in rows] == names
  assert [float(r['learning_rate']) for r in rows] == [100.0] * 2 + [1e-4] * 2
  assert [r['status'] for r in rows] == [
      s['status'] for s in statuses.values()]
  assert float(rows[2]['best_val_accuracy']) == pytest.approx(
      statuses['lr_1e-4,seed=0']['best']['val_accuracy'])
  with (sweep_dir / 'points.csv').open(newline='') as f:
    points = list(csv.DictReader(f))
  assert [(p['point'], p['runs'], p['diverged'], p['seeds'])
          for p in points] == [('lr_1e2', '2', '2', '0 1'),
                               ('lr_1e-4', '2', '0', '0 1')]
  assert 'Best point: lr_1e-4 (' in result.stdout
  for name in ('train_loss.png', 'train_accuracy.png', 'curves.png',
               'accuracy_vs_lr.png', 'lr_batch_heatmap.png'):
    with Image.open(sweep_dir / name) as image:
      image.verify()
  assert 'lettercnn.main' in (sweep_dir / 'lr_1e-4,seed=0' / 'log.txt').read_text()

  # Everything finished: a rerun trains nothing.
  rerun = run_sweep([*args, '--no-report'], env, timeout=60)
  assert rerun.returncode == 0, rerun.stderr
  assert rerun.stdout.count('already finished') == 4
  assert (sweep_dir / 'lr_1e-4,seed=0' / 'log.txt').read_text().count('=== ') == 1
