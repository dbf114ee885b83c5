"""Tests of lettercnn.sweep.launch's scheduling, driven in-process.

tests/sweep_test.py runs the whole command through scripts/sweep.sh; these
call the scheduler with hand-made points and a fake trainer (a bash script in
place of `python`) that records its CPUs and times.
"""

import os
import pathlib
import subprocess
import sys

import pytest

from lettercnn.run import workdir as workdir_guard
from run_helpers import allowed_cpus
from lettercnn.sweep import grid
from lettercnn.sweep import launch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Stands in for `python -m lettercnn.main`: records the CPUs it may run on and
# its start and end times in the workdir, sleeps --sleep=S seconds, then
# writes status "converged"; with --exit=75 it says, as lettercnn.main does,
# that process 4242 holds its workdir and exits 75.
FAKE_TRAINER = """#!/usr/bin/env bash
set -eu
[[ "$1 $2" == "-m lettercnn.main" ]] || exit 99
shift 2
sleep_s=0
exit_code=0
for arg in "$@"; do
  case "${arg}" in
    --workdir=*) workdir="${arg#--workdir=}" ;;
    --sleep=*) sleep_s="${arg#--sleep=}" ;;
    --exit=*) exit_code="${arg#--exit=}" ;;
  esac
done
grep Cpus_allowed_list /proc/$$/status | cut -f2 >"${workdir}/cpus"
date +%s.%N >"${workdir}/start"
if ((exit_code == 75)); then
  echo "lettercnn: error: workdir ${workdir} is in use by process 4242" \
    "(it holds ${workdir}/.lock); wait for it to end" >&2
  exit 75
fi
sleep "${sleep_s}"
date +%s.%N >"${workdir}/end"
echo '{"status": "converged", "config": {}}' >"${workdir}/status.json"
"""


@pytest.fixture
def trainer(tmp_path) -> str:
  path = tmp_path / 'fake_python'
  path.write_text(FAKE_TRAINER)
  path.chmod(0o755)
  return str(path)


@pytest.fixture
def sweep_dir(tmp_path) -> pathlib.Path:
  folder = tmp_path / 'sweep'
  folder.mkdir()
  return folder


def _point(name: str, *overrides: str) -> grid.Run:
  return grid.Run(name, f'configs/{name}.py', overrides)


def _time(workdir: pathlib.Path, which: str) -> float:
  return float((workdir / which).read_text())


def test_cpu_sets_split_the_cpus_or_leave_runs_unpinned():
  cpus = sorted(os.sched_getaffinity(0))
  sets = launch.cpu_sets(len(cpus))
  assert sets == [[cpu] for cpu in cpus] or len(cpus) == 1
  assert launch.cpu_sets(len(cpus) + 1) == []  # Fewer CPUs than slots.
  assert launch.cpu_sets(2, pin=False) == []
  assert launch.cpu_sets(1) == []


def test_slots_are_reused_and_pinned_to_disjoint_cpus(sweep_dir, trainer,
                                                       capsys):
  sets = launch.cpu_sets(2)
  if not sets:
    pytest.skip('pinning two runs apart needs two CPUs')
  scheduler = launch.Scheduler(str(sweep_dir), trainer, [], jobs=2,
                               cpu_sets=sets)
  scheduler.run([_point('a', '--sleep=2'), _point('b', '--sleep=0.3'),
                 _point('c')])

  a, b, c = (sweep_dir / name for name in 'abc')
  assert not scheduler.running and not scheduler.failures
  # a and b ran at once, each on its own slot's CPUs.
  assert _time(b, 'start') < _time(a, 'end')
  assert (allowed_cpus(a), allowed_cpus(b)) == (set(sets[0]), set(sets[1]))
  # c waited for a free slot, b's, while a still ran, and took b's CPUs.
  assert _time(b, 'end') <= _time(c, 'start') < _time(a, 'end')
  assert allowed_cpus(c) == set(sets[1])
  assert f'[sweep] c: started on CPUs {",".join(map(str, sets[1]))}' in (
      capsys.readouterr().out)


def test_finished_points_are_skipped_unless_relaunched(sweep_dir, trainer,
                                                       capsys):
  for name, status in (('a', 'converged'), ('b', 'running')):
    (sweep_dir / name).mkdir()
    (sweep_dir / name / 'status.json').write_text(
        f'{{"status": "{status}", "config": {{}}}}')
  points = [_point('a'), _point('b'), _point('c')]
  launch.Scheduler(str(sweep_dir), trainer, [], jobs=1).run(points)

  out = capsys.readouterr().out
  assert '[sweep] a: already finished (converged), skipped.' in out
  assert not (sweep_dir / 'a' / 'start').exists()
  assert (sweep_dir / 'b' / 'start').exists()  # Unfinished: resumed.
  assert (sweep_dir / 'c' / 'start').exists()

  # A folder whose runs predate its record relaunches finished ones too.
  launch.Scheduler(str(sweep_dir), trainer, [], jobs=1).run(
      points[:1], relaunch_finished=True)
  assert (sweep_dir / 'a' / 'start').exists()


def test_overrides_record_refuses_other_overrides(sweep_dir):
  record = sweep_dir / launch.OVERRIDES_FILE
  first = launch.normalized_overrides(
      ['--config.seed=1', '--config.num_epochs=10'])
  assert not launch.prepare_overrides(str(sweep_dir), first)
  assert record.read_text() == '--config.num_epochs=10\n--config.seed=1\n'

  # The same overrides in another order, a field's last value counting.
  launch.prepare_overrides(str(sweep_dir), launch.normalized_overrides(
      ['--config.seed=5', '--config.num_epochs=10', '--config.seed=1']))
  other = launch.normalized_overrides(['--config.seed=2'])
  with pytest.raises(launch.UsageError) as error:
    launch.prepare_overrides(str(sweep_dir), other)
  assert str(error.value).startswith(
      f"{sweep_dir} was swept with overrides '--config.num_epochs=10 "
      "--config.seed=1' and this run gives '--config.seed=2'; use another")
  # A second record never replaces the first.
  assert not launch.record_overrides(str(sweep_dir), other)
  assert record.read_text() == '--config.num_epochs=10\n--config.seed=1\n'
  assert sorted(p.name for p in sweep_dir.iterdir()) == [record.name]


def test_folder_with_runs_but_no_record_is_left_unrecorded(sweep_dir):
  (sweep_dir / 'a').mkdir()
  (sweep_dir / 'a' / 'status.json').write_text('{}')

  assert launch.prepare_overrides(str(sweep_dir), '--config.seed=1')
  assert not (sweep_dir / launch.OVERRIDES_FILE).exists()


@pytest.fixture
def held_workdir(sweep_dir):
  """Holds SWEEP_DIR/a's lock from another process, as a run there does."""
  code = ('import sys, time\n'
          'from lettercnn.run import workdir\n'
          'with workdir.locked(sys.argv[1]):\n'
          '  print("locked", flush=True)\n'
          '  time.sleep(600)\n')
  holder = subprocess.Popen(
      [sys.executable, '-c', code, str(sweep_dir / 'a')],
      stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
      env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})
  assert holder.stdout.readline() == 'locked\n'
  yield holder
  holder.kill()
  holder.wait()
  holder.stdout.close()


def test_busy_points_are_reported_not_failed(sweep_dir, trainer, held_workdir,
                                             capsys):
  assert workdir_guard.holder(str(sweep_dir / 'a')) == str(held_workdir.pid)
  scheduler = launch.Scheduler(str(sweep_dir), trainer, [], jobs=1)
  scheduler.run([_point('a'), _point('b', '--exit=75'), _point('c')])

  # a: held before the launch, so not started; b: lettercnn.main found it
  # taken (exit 75), and its log names the holder.
  assert not (sweep_dir / 'a' / 'start').exists()
  assert (sweep_dir / 'b' / 'start').exists()
  assert scheduler.busy == [f'a (process {held_workdir.pid})',
                            'b (process 4242)']
  assert not scheduler.failures
  out = capsys.readouterr().out
  assert (f'[sweep] a: busy (process {held_workdir.pid} holds its workdir), '
          'not started') in out
  assert '[sweep] c: converged' in out
