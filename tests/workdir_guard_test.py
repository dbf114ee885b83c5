"""One process per workdir, and a workdir that knows which run it holds.

The run-level tests start from one run killed after its first checkpoint
(epoch 1 of 4, step 150), copied afresh for each test, then break something
about it and check the one line the next run prints, what it left alone,
and, where it may go on, the step it resumed at.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

from conftest import REPO_ROOT
import pytest
from run_helpers import assert_resumed_from
from run_helpers import finish
from run_helpers import finished_checkpoints
from run_helpers import read_status
from run_helpers import run_main

from lettercnn.run import workdir as workdir_guard

# SIGKILL at the 2nd call of the train step of epoch 2: after the checkpoint
# at step 150 (150 steps an epoch, chunks of 64, 6, 58, 12, 10 steps).
_KILL_IN_EPOCH_2 = """
    import os, signal
    from lettercnn import train
    calls = 0
    def call(self, *args):
      global calls
      calls += 1
      if calls == 7:
        os.kill(os.getpid(), signal.SIGKILL)
      return real(self, *args)
    real = train.ChunkedTrainStep.__call__
    train.ChunkedTrainStep.__call__ = call
    """


@pytest.fixture(scope='module')
def killed_run(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp('killed') / 'run')
  exit_code, _, stderr = run_main(workdir, data_dir, _KILL_IN_EPOCH_2)
  assert exit_code == -signal.SIGKILL, stderr[-3000:]
  assert finished_checkpoints(workdir) == ['150']
  return workdir


@pytest.fixture
def workdir(killed_run, tmp_path):
  copy = tmp_path / 'run'
  shutil.copytree(killed_run, copy)
  return copy


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
  """Every file below `folder` and its bytes, but the lock file.

  (A killed run leaves its lock file behind, unlocked; the next holder
  writes its own pid into it and removes it when it lets go.)
  """
  return {str(p.relative_to(folder)): p.read_bytes()
          for p in sorted(folder.rglob('*'))
          if p.is_file() and p.name != workdir_guard.LOCK_FILE}


def _error_line(stderr: str) -> str:
  [line] = [l for l in stderr.splitlines() if l.startswith('lettercnn: error')]
  return line


def test_second_process_is_refused_with_the_holders_pid(workdir, data_dir):
  before = _snapshot(workdir)
  with workdir_guard.locked(str(workdir)):
    exit_code, _, stderr = run_main(workdir, data_dir)

  assert exit_code == workdir_guard.BUSY_EXIT_CODE, stderr[-3000:]
  assert _error_line(stderr) == (
      f'lettercnn: error: workdir {workdir} is in use by process '
      f'{os.getpid()} (it holds {workdir}/.lock); wait for it to end, or pass '
      'another --workdir')
  assert _snapshot(workdir) == before


_HOLD_LOCK = """
import sys, time
from lettercnn.run import workdir as workdir_guard
with workdir_guard.locked(sys.argv[1]):
  print('locked', flush=True)
  time.sleep(600)
"""


def test_lock_dies_with_its_holder_even_on_sigkill(tmp_path):
  workdir = str(tmp_path / 'run')
  holder = subprocess.Popen([sys.executable, '-c', _HOLD_LOCK, workdir],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline() == 'locked\n'
    assert workdir_guard.holder(workdir) == str(holder.pid)
    with pytest.raises(workdir_guard.Busy, match=f'process {holder.pid} '):
      with workdir_guard.locked(workdir):
        pass
  finally:
    holder.kill()
    holder.wait()

  assert os.path.exists(os.path.join(workdir, workdir_guard.LOCK_FILE))
  assert workdir_guard.holder(workdir) is None
  with workdir_guard.locked(workdir):
    assert workdir_guard.holder(workdir) == str(os.getpid())


@pytest.mark.parametrize('damage', ['deleted', 'garbage', 'not_utf8'])
def test_lost_status_json_is_rebuilt_from_the_checkpoint(workdir, data_dir,
                                                         damage):
  status_file = workdir / 'status.json'
  if damage == 'deleted':
    status_file.unlink()
  else:
    status_file.write_bytes(b'{"status": "runn' if damage == 'garbage'
                            else b'\xff\xfe{}')
  before = _snapshot(workdir)

  # Another config is still refused: the checkpoint knows the config.
  exit_code, _, stderr = run_main(workdir, data_dir,
                                  overrides=['--config.seed=1'])
  assert exit_code == 2, stderr[-3000:]
  assert _error_line(stderr).startswith(
      f'lettercnn: error: workdir {workdir} holds a run of a different config '
      '(seed: 0 there vs 1 now)')
  assert _snapshot(workdir) == before

  pid, stderr = finish(workdir, data_dir)

  assert 'rebuilt it from the checkpoint at step 150' in stderr
  assert_resumed_from(workdir, pid, stderr, 150)
  assert read_status(workdir)['status'] == 'converged'


def test_events_without_status_or_checkpoint_are_refused(tmp_path, data_dir):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'events.out.tfevents.1.host.7.v2').write_bytes(b'history')
  exit_code, _, stderr = run_main(workdir, data_dir)

  assert exit_code == 2
  assert _error_line(stderr) == (
      f'lettercnn: error: workdir {workdir} holds TensorBoard events but no '
      'status.json and no checkpoint that says which config wrote it; move it '
      'aside, or pass another --workdir')
  assert _snapshot(workdir) == {'events.out.tfevents.1.host.7.v2': b'history'}


def test_another_device_count_is_refused(workdir, data_dir):
  """num_devices=0 (all) on a machine with one device instead of two."""
  before = _snapshot(workdir)
  exit_code, _, stderr = run_main(
      workdir, data_dir,
      env={'XLA_FLAGS': '--xla_force_host_platform_device_count=1'})
  assert exit_code == 2, stderr[-3000:]
  assert _error_line(stderr).startswith(
      f'lettercnn: error: workdir {workdir} holds a run on 2 device(s), and '
      'this one would use 1')
  assert _snapshot(workdir) == before


def test_the_refusals_advice_resumes_a_run_from_before_cpu_devices(
    workdir, data_dir):
  """The run of 2 devices, on 4, with --config.num_devices=2 as refused above.

  Its status.json is as a run from before `cpu_devices` existed wrote it.
  Neither field makes it another config: both only choose the devices,
  whose count is checked on its own.
  """
  status_file = workdir / 'status.json'
  status = json.loads(status_file.read_text())
  del status['config']['cpu_devices']
  status_file.write_text(json.dumps(status))
  exit_code, pid, stderr = run_main(
      workdir, data_dir, overrides=['--config.num_devices=2'],
      env={'XLA_FLAGS': '--xla_force_host_platform_device_count=4'})
  assert exit_code == 0, stderr[-3000:]
  assert_resumed_from(workdir, pid, stderr, 150)
  assert read_status(workdir)['num_devices'] == 2


# A parameter the checkpoint does not have, as after a change to the model.
_EXTRA_PARAMETER = """
    import jax.numpy as jnp
    from lettercnn import train
    def create(rng, model, image_shape, tx):
      state = real(rng, model, image_shape, tx)
      params = dict(state.params, Extra={'kernel': jnp.zeros(3)})
      return train.train_state.TrainState.create(
          apply_fn=state.apply_fn, params=params, tx=tx)
    real = train.create_train_state
    train.create_train_state = create
    """


def test_checkpoint_of_other_code_stops_and_moves_nothing(workdir, data_dir):
  before = _snapshot(workdir)
  exit_code, _, stderr = run_main(workdir, data_dir, _EXTRA_PARAMETER)

  assert exit_code == 2, stderr[-3000:]
  assert _error_line(stderr) == (
      'lettercnn: error: the checkpoint at step 150 in '
      f'{workdir}/checkpoints is intact but does not fit this code: '
      "['state']['opt_state']['2']['1']['trace']['Extra']['kernel'] is missing "
      'from it; resume it with the code that wrote it, or train into another '
      '--workdir')
  assert _snapshot(workdir) == before  # Events untrimmed, nothing set aside.


def test_workdir_that_is_a_file(tmp_path, data_dir):
  path = tmp_path / 'run'
  path.write_text('not a folder')
  exit_code, _, stderr = run_main(path, data_dir)
  assert exit_code == 2
  assert _error_line(stderr) == (
      f'lettercnn: error: workdir {path} is a file, not a folder')
  assert path.read_text() == 'not a folder'


# What tensorstore raises when the disk fills while the arrays are written,
# copied from a real save onto a full 2 MiB tmpfs.
_DISK_FULL_AT_SECOND_SAVE = """
    import os
    import orbax.checkpoint as ocp
    saves = 0
    def save(self, directory, *args, **kwargs):
      global saves
      if os.sep + 'checkpoints' + os.sep in str(directory):  # Not the best.
        saves += 1
        if saves == 2:
          raise ValueError(
              'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at '
              'local file "x/": Failed to write 646722 bytes to file 14: No '
              "space left on device [os_error_code='28']")
      return real(self, directory, *args, **kwargs)
    real = ocp.StandardCheckpointHandler.async_save
    ocp.StandardCheckpointHandler.async_save = save
    """


def test_full_disk_keeps_the_last_checkpoint_and_says_so(workdir, data_dir):
  exit_code, _, stderr = run_main(workdir, data_dir, _DISK_FULL_AT_SECOND_SAVE)

  assert exit_code == 2, stderr[-3000:]
  assert _error_line(stderr) == (
      'lettercnn: error: could not write the checkpoint at step 450 in '
      f'{workdir}/checkpoints (No space left on device); the checkpoint at '
      'step 300 is intact')
  assert sorted(map(int, finished_checkpoints(workdir))) == [150, 300]
  assert read_status(workdir)['step'] == 300

  pid, stderr = finish(workdir, data_dir)
  assert_resumed_from(workdir, pid, stderr, 300)


def test_unwritable_workdir(tmp_path, data_dir):
  """Root writes anywhere, so the refusal is injected where the lock opens."""
  workdir = tmp_path / 'run'
  fault = f"""
    import errno, os
    def refuse(path, *args, **kwargs):
      if str(path).startswith({str(workdir)!r}):
        raise PermissionError(errno.EACCES, 'Permission denied', path)
      return real(path, *args, **kwargs)
    real = os.open
    os.open = refuse
    """
  exit_code, _, stderr = run_main(workdir, data_dir, fault)
  assert exit_code == 2, stderr[-3000:]
  assert _error_line(stderr) == (
      f'lettercnn: error: workdir {workdir} cannot be written (Permission '
      'denied)')


# The disk's free space as os.statvfs tells it, made 0 from the n-th look on:
# 1st before training, then before each save (of the latest checkpoints; a
# best checkpoint's looks are elsewhere, and not counted).
_DISK_FULL_FROM_LOOK_NUMBER = """
    import os
    from lettercnn.run import checkpoints as checkpointing
    looks = 0
    def free_bytes(path):
      global looks
      if not path.endswith(os.sep + 'checkpoints'):
        return real(path)
      looks += 1
      return 0 if looks >= {n} else real(path)
    real = checkpointing._free_bytes
    checkpointing._free_bytes = free_bytes
    """


def test_no_room_for_a_checkpoint_stops_before_training(tmp_path, data_dir):
  workdir = tmp_path / 'run'
  exit_code, _, stderr = run_main(workdir, data_dir,
                                  _DISK_FULL_FROM_LOOK_NUMBER.format(n=1))

  assert exit_code == 2, stderr[-3000:]
  # LeNet's 431,080 parameters and their momentum, and room for metadata.
  assert _error_line(stderr) == (
      'lettercnn: error: not enough disk for checkpoints in '
      f'{workdir}/checkpoints: one needs up to 3.5 MiB and 0.0 MiB are free; '
      'there is no earlier checkpoint, free some space and run again')
  assert 'Epoch 1/4' not in stderr
  assert _snapshot(workdir) == {}  # No events, no status.json.


def test_disk_filling_up_keeps_the_last_checkpoint(workdir, data_dir):
  exit_code, _, stderr = run_main(workdir, data_dir,
                                  _DISK_FULL_FROM_LOOK_NUMBER.format(n=3))

  assert exit_code == 2, stderr[-3000:]
  assert _error_line(stderr).endswith(
      '0.0 MiB are free; the checkpoint at step 300 is intact, free some space '
      'and run again')
  assert 'Traceback' not in stderr
  assert sorted(map(int, finished_checkpoints(workdir))) == [150, 300]
  assert read_status(workdir)['step'] == 300


def test_workdir_on_a_disk_that_takes_no_more_bytes(tmp_path, data_dir):
  """A file-size limit of 0 fails every write, as a full disk does."""
  workdir = tmp_path / 'run'
  fault = """
    import resource, signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill.
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    """
  exit_code, _, stderr = run_main(workdir, data_dir, fault)

  assert exit_code == 2, stderr[-3000:]
  assert _error_line(stderr) == (
      f'lettercnn: error: workdir {workdir} cannot be written (File too large)')
  assert _snapshot(workdir) == {}


def test_policy_fields_recorded_as_none_are_the_same_run(tmp_path):
  """A None policy field means the policy's default: it matches that value.

  (train.train_and_evaluate records the config it is given; one built by
  configs/default.get_config() without lettercnn's loading leaves them None.)
  """
  from configs import default  # pylint: disable=g-import-not-at-top
  from lettercnn import config_loading  # pylint: disable=g-import-not-at-top
  unresolved = default.get_config().to_dict()
  assert unresolved['lr_decay_factor'] is None
  status = {'status': 'running', 'step': 0, 'config': unresolved}
  (tmp_path / 'status.json').write_text(json.dumps(status))
  resolved = config_loading.load_config('configs/default.py', [])
  assert workdir_guard.existing_run(resolved, str(tmp_path), 1) == status
  other = config_loading.load_config('configs/default.py',
                                     ['--config.lr_decay_factor=0.5'])
  with pytest.raises(ValueError, match=r'\(lr_decay_factor: 0.1 there vs 0.5 '
                     'now\\)'):
    workdir_guard.existing_run(other, str(tmp_path), 1)


def test_folder_of_other_files_is_refused_and_left_alone(tmp_path, data_dir):
  """`--workdir=/`, say: a folder that holds no run is not trained into."""
  workdir = tmp_path / 'photos'
  (workdir / 'album').mkdir(parents=True)
  (workdir / 'notes.txt').write_text('mine')
  (workdir / workdir_guard.LOCK_FILE).write_text('')
  before = sorted(p.name for p in workdir.iterdir())
  exit_code, _, stderr = run_main(workdir, data_dir)

  assert exit_code == 2, stderr[-3000:]
  assert _error_line(stderr) == (
      f'lettercnn: error: workdir {workdir} is not empty and holds no '
      'lettercnn run (it holds album, notes.txt); pass a new or empty folder '
      'as --workdir')
  assert sorted(p.name for p in workdir.iterdir()) == before
  assert (workdir / 'notes.txt').read_text() == 'mine'


@pytest.mark.parametrize('entries, foreign', [
    ((), False),
    (('log.txt',), False),  # The sweep launcher's, before the run.
    (('log.txt', workdir_guard.LOCK_FILE), False),
    (('status.json', 'notes.txt'), False),
    (('checkpoints/', 'notes.txt'), False),
    (('best_checkpoint/', 'notes.txt'), False),
    (('notes.txt',), True),
    (('log.txt', 'data/'), True),
])
def test_which_folders_are_a_runs(tmp_path, entries, foreign):
  for entry in entries:
    if entry.endswith('/'):
      (tmp_path / entry).mkdir()
    else:
      (tmp_path / entry).write_text('')
  if foreign:
    with pytest.raises(ValueError, match='holds no lettercnn run'):
      workdir_guard.check_not_foreign(str(tmp_path))
  else:
    workdir_guard.check_not_foreign(str(tmp_path))


def test_foreign_folder_is_refused_before_the_lock_is_written(tmp_path,
                                                              monkeypatch):
  from lettercnn import config_loading  # pylint: disable=g-import-not-at-top
  (tmp_path / 'notes.txt').write_text('mine')
  config = config_loading.load_config('configs/default.py', [])
  locks = []
  real_locked = workdir_guard.locked
  monkeypatch.setattr(workdir_guard, 'locked',
                      lambda workdir: locks.append(workdir) or real_locked(
                          workdir))
  with pytest.raises(ValueError, match='holds no lettercnn run'):
    with workdir_guard.claimed(config, str(tmp_path), 1):
      pass
  assert not locks  # Not even a lock file, for a moment.
  assert os.listdir(tmp_path) == ['notes.txt']
