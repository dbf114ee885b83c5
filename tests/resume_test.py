"""Never lose a run: a resume restores, and ends where an unbroken run ends.

Each resume test asserts on the mechanism, not only the end state: the
resumed process says which checkpoint it restored, and its own event file
starts after that step (a retrain from step 0 would end at the same
parameters, since training is deterministic).
"""

import os
import re
import signal
import subprocess
import sys
import time

from conftest import load_config
from conftest import REPO_ROOT
from run_helpers import assert_resumed_from
from run_helpers import command
from run_helpers import finish
from run_helpers import finished_checkpoints
from run_helpers import read_status
from run_helpers import run_main
from run_helpers import TINY_RUN
import jax.numpy as jnp
import numpy as np
import pytest

from lettercnn.run import checkpoints as checkpointing
from lettercnn.run import events as tb_events

@pytest.fixture(scope='module')
def uninterrupted_run(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  finish(workdir, data_dir)  # Also builds the dataset for the runs below.
  return workdir


def _interrupt_after_first_checkpoint(workdir, data_dir, sig, delay_s, log):
  """Starts a run, sends `sig` `delay_s` after its first checkpoint; exit code.

  The run's stderr (absl's log) goes to the file `log`.
  """
  with open(log, 'w') as log_file:
    process = subprocess.Popen(command(workdir, data_dir), cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=log_file)
    deadline = time.monotonic() + 300
    while not finished_checkpoints(workdir) and time.monotonic() < deadline:
      time.sleep(0.02)
    time.sleep(delay_s)
    process.send_signal(sig)
    return process.wait()


def _assert_same_run(expected_dir, resumed_dir):
  expected, resumed = read_status(expected_dir), read_status(resumed_dir)
  assert resumed['status'] == expected['status']
  assert resumed['params_sha256'] == expected['params_sha256']
  assert resumed['final'] == expected['final']
  assert resumed['best'] == expected['best']
  expected_scalars = tb_events.read_scalars(expected_dir)
  resumed_scalars = tb_events.read_scalars(resumed_dir)
  assert set(resumed_scalars) == set(expected_scalars)
  for tag, values in expected_scalars.items():
    steps = [s for s, _ in resumed_scalars[tag]]
    assert len(steps) == len(set(steps)), f'{tag} has duplicated steps'
    assert resumed_scalars[tag] == values, tag


def test_sigkill_then_resume_matches_uninterrupted_run(
    uninterrupted_run, tmp_path, data_dir):
  killed = str(tmp_path / 'run')
  _interrupt_after_first_checkpoint(killed, data_dir, signal.SIGKILL, 0.0,
                                    tmp_path / 'log')
  assert finished_checkpoints(killed), 'no checkpoint before the deadline'
  assert read_status(killed)['status'] == 'running', 'run ended before the kill'
  checkpoint_step = max(map(int, finished_checkpoints(killed)))

  pid, stderr = finish(killed, data_dir)

  assert_resumed_from(killed, pid, stderr, checkpoint_step)
  _assert_same_run(uninterrupted_run, killed)


def test_sigterm_saves_where_it_stopped_and_resume_matches(
    uninterrupted_run, tmp_path, data_dir):
  """Real signal delivery; where in the run it lands varies with timing."""
  stopped, log = str(tmp_path / 'run'), tmp_path / 'log'
  exit_code = _interrupt_after_first_checkpoint(stopped, data_dir,
                                                signal.SIGTERM, 0.3, log)
  assert exit_code == 128 + signal.SIGTERM, log.read_text()[-2000:]
  stop_step = re.search(r'at step (\d+); checkpoint saved', log.read_text())
  assert stop_step, 'the run did not say where it stopped'
  assert max(map(int, finished_checkpoints(stopped))) == int(
      stop_step.group(1))

  pid, stderr = finish(stopped, data_dir)

  assert_resumed_from(stopped, pid, stderr, int(stop_step.group(1)))
  _assert_same_run(uninterrupted_run, stopped)


def _tiny_run_config(data_dir):
  """The config `command` trains, built in-process."""
  config = load_config('lr_1e-4')
  config.data_dir = data_dir
  for override in TINY_RUN:
    field, value = override.removeprefix('--config.').split('=')
    setattr(config, field, int(value))
  return config


def test_stop_signal_mid_epoch_saves_that_step_and_resume_matches(
    uninterrupted_run, tmp_path, data_dir, monkeypatch):
  """SIGTERM during the third chunk call: the run stops mid-epoch, exactly.

  150 steps per epoch in chunks of 64 cut at the log interval (70):
  [0, 64), [64, 70), [70, 128); the flag is seen before the fourth call.
  """
  from lettercnn import train  # pylint: disable=g-import-not-at-top
  from lettercnn.run import signals  # pylint: disable=g-import-not-at-top
  calls = 0
  train_chunk = train.ChunkedTrainStep.__call__

  def signal_on_third_call(self, *args):
    nonlocal calls
    calls += 1
    if calls == 3:
      signal.raise_signal(signal.SIGTERM)
    return train_chunk(self, *args)

  monkeypatch.setattr(train.ChunkedTrainStep, '__call__', signal_on_third_call)
  workdir = str(tmp_path)
  with pytest.raises(signals.Preempted, match='at step 128;') as stopped:
    train.train_and_evaluate(_tiny_run_config(data_dir), workdir)
  assert stopped.value.exit_code == 128 + signal.SIGTERM
  assert finished_checkpoints(workdir) == ['128']
  assert read_status(workdir)['status'] == 'running'
  assert read_status(workdir)['step'] == 128
  monkeypatch.undo()

  pid, stderr = finish(workdir, data_dir)

  assert_resumed_from(workdir, pid, stderr, 128)
  _assert_same_run(uninterrupted_run, workdir)


def test_two_identical_runs_match(uninterrupted_run, tmp_path, data_dir):
  finish(str(tmp_path), data_dir)
  _assert_same_run(uninterrupted_run, str(tmp_path))


def test_finished_run_relaunched_trains_nothing(uninterrupted_run, data_dir):
  workdir = uninterrupted_run
  before = sorted(os.listdir(workdir))
  result = subprocess.run(command(workdir, data_dir), cwd=REPO_ROOT,
                          check=True, capture_output=True, text=True)
  assert 'already finished, nothing to train' in result.stdout
  assert sorted(os.listdir(workdir)) == before


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  for step in (10, 20):
    checkpointer.save(checkpointing.Snapshot(
        step=step, arrays={'w': np.full(3, step, np.float32)},
        meta={'step': step}))
  for root, _, files in os.walk(tmp_path / 'checkpoints' / '20' / 'arrays'):
    for name in files:
      with open(os.path.join(root, name), 'r+b') as f:
        f.seek(0)
        f.write(b'\0' * 64)

  snapshot = checkpointing.Checkpointer(str(tmp_path)).restore_latest(
      {'w': np.zeros(3, np.float32)})

  assert snapshot.step == 10
  assert snapshot.arrays['w'].tolist() == [10.0, 10.0, 10.0]
  assert snapshot.meta == {'step': 10}
  assert os.path.isdir(tmp_path / 'corrupt_checkpoints' / '20')


class _RaisesWhenDeleted:
  """Python reports its error to sys.unraisablehook, as it does tensorstore's
  callbacks'."""

  def __init__(self, message):
    self.message = message

  def __del__(self):
    raise RuntimeError(self.message)


def test_a_corrupt_checkpoints_abandoned_reads_stay_out_of_the_log(
    tmp_path, monkeypatch, capsys):
  """Tensorstore's late callbacks on orbax's closed event loop are dropped."""
  monkeypatch.setattr(sys, 'unraisablehook', sys.__unraisablehook__)
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  for step in (10, 20):
    checkpointer.save(checkpointing.Snapshot(
        step=step, arrays={'w': np.full(3, step, np.float32)}, meta={}))
  for path in (tmp_path / 'checkpoints' / '20' / 'arrays').rglob('*'):
    if path.is_file():
      path.write_bytes(b'')
  assert checkpointing.Checkpointer(str(tmp_path)).restore_latest(
      {'w': np.zeros(3, np.float32)}).step == 10
  capsys.readouterr()

  _RaisesWhenDeleted('Event loop is closed')
  assert 'Event loop is closed' not in capsys.readouterr().err
  _RaisesWhenDeleted('something else')
  assert 'something else' in capsys.readouterr().err


def test_checksum_catches_silently_changed_arrays(tmp_path, monkeypatch):
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  checkpointer.save(checkpointing.Snapshot(
      step=5, arrays={'w': np.ones(3, np.float32)}, meta={}))
  real_digest = checkpointing.array_digest
  monkeypatch.setattr(checkpointing, 'array_digest',
                      lambda arrays: 'not ' + real_digest(arrays))
  assert checkpointer.restore_latest({'w': np.zeros(3, np.float32)}) is None
  assert os.path.isdir(tmp_path / 'corrupt_checkpoints' / '5')


def test_checksum_catches_a_changed_value_in_the_metadata(tmp_path):
  """One bit of the best accuracy flipped on disk (0.404 -> 0.504)."""
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  for step in (10, 20):
    checkpointer.save(checkpointing.Snapshot(
        step=step, arrays={'w': np.full(3, step, np.float32)},
        meta={'step': step, 'best': {'val_accuracy': 0.404, 'epoch': 1}}))
  changed = 0
  for path in (tmp_path / 'checkpoints' / '20' / 'meta').rglob('*'):
    if path.is_file() and b'0.404' in path.read_bytes():
      path.write_bytes(path.read_bytes().replace(b'0.404', b'0.504'))
      changed += 1
  assert changed == 1

  reader = checkpointing.CheckpointReader(str(tmp_path))
  assert reader.latest_meta().step == 10
  reader.close()
  snapshot = checkpointing.Checkpointer(str(tmp_path)).restore_latest(
      {'w': np.zeros(3, np.float32)})

  assert snapshot.step == 10
  assert snapshot.meta == {'step': 10,
                           'best': {'val_accuracy': 0.404, 'epoch': 1}}
  assert os.path.isdir(tmp_path / 'corrupt_checkpoints' / '20')


def test_saving_a_step_twice_keeps_the_first_checkpoint(tmp_path):
  """A stop signal right after a scheduled save asks for the same step again."""
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  for value in (1.0, 2.0):
    checkpointer.save(checkpointing.Snapshot(
        step=5, arrays={'w': np.full(3, value, np.float32)}, meta={}))

  snapshot = checkpointer.restore_latest({'w': np.zeros(3, np.float32)})

  assert snapshot.step == 5
  assert snapshot.arrays['w'].tolist() == [1.0, 1.0, 1.0]


# Faults injected into a run's own process: SIGKILL at a chosen moment.
_KILL_DURING_SAVE_NUMBER = """
    import os, signal
    import orbax.checkpoint as ocp
    saves = 0
    def save(self, directory, *args, **kwargs):  # The meta, after the arrays.
      global saves
      if os.sep + 'checkpoints' + os.sep in str(directory):  # Not the best.
        saves += 1
        if saves == {n}:
          os.kill(os.getpid(), signal.SIGKILL)
      return real(self, directory, *args, **kwargs)
    real = ocp.JsonCheckpointHandler.async_save
    ocp.JsonCheckpointHandler.async_save = save
    """
_KILL_AT_CHUNK_NUMBER = """
    import os, signal
    from lettercnn import train
    calls = 0
    def call(self, *args):
      global calls
      calls += 1
      if calls == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
      return real(self, *args)
    real = train.ChunkedTrainStep.__call__
    train.ChunkedTrainStep.__call__ = call
    """
_KILL_AT_STATUS_WRITE_NUMBER = """
    import os, signal
    from lettercnn.run import status as run_status
    writes = 0
    def write(*args):
      global writes
      writes += 1
      if writes == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
      return real(*args)
    real = run_status.write
    run_status.write = write
    """


def test_killed_at_many_moments_keeps_progress_and_ends_identical(
    uninterrupted_run, tmp_path, data_dir):
  """SIGKILL during a save, mid-epoch and between a save and status.json.

  150 steps per epoch, in 5 chunk calls ([0, 64), [64, 70), [70, 128),
  [128, 140), [140, 150)); a checkpoint after each epoch.
  """
  workdir = str(tmp_path)
  exit_code, _, stderr = run_main(
      workdir, data_dir, _KILL_DURING_SAVE_NUMBER.format(n=2))
  assert exit_code == -signal.SIGKILL, stderr[-3000:]
  assert finished_checkpoints(workdir) == ['150']  # 300 was being written.
  assert any('orbax-checkpoint-tmp' in name
             for name in os.listdir(os.path.join(workdir, 'checkpoints')))

  # Resumes at 150, is killed in its 8th chunk call (epoch 3, step 370).
  exit_code, pid, stderr = run_main(workdir, data_dir,
                                _KILL_AT_CHUNK_NUMBER.format(n=8))
  assert exit_code == -signal.SIGKILL, stderr[-3000:]
  assert_resumed_from(workdir, pid, stderr, 150)
  assert sorted(map(int, finished_checkpoints(workdir))) == [150, 300]

  # Resumes at 300 (its 1st status write); killed at its 2nd: after the
  # checkpoint at 450, before status.json says so.
  exit_code, pid, stderr = run_main(workdir, data_dir,
                                _KILL_AT_STATUS_WRITE_NUMBER.format(n=2))
  assert exit_code == -signal.SIGKILL, stderr[-3000:]
  assert_resumed_from(workdir, pid, stderr, 300)
  assert read_status(workdir)['step'] == 300
  assert max(map(int, finished_checkpoints(workdir))) == 450

  pid, stderr = finish(workdir, data_dir)

  assert_resumed_from(workdir, pid, stderr, 450)
  assert not os.path.exists(os.path.join(workdir, 'corrupt_checkpoints'))
  _assert_same_run(uninterrupted_run, workdir)


def test_python_int_in_the_template_restores_the_saved_int32(tmp_path):
  """A TrainState's step is a Python int before training, int32 after.

  Restoring into that template once cast the saved step to int64, so the
  checksum never matched and every checkpoint was set aside as corrupt.
  """
  Checkpointer = checkpointing.Checkpointer  # pylint: disable=invalid-name
  Checkpointer(str(tmp_path)).save(checkpointing.Snapshot(
      step=3, arrays={'step': jnp.int32(3), 'w': np.ones(3, np.float32)},
      meta={}))

  snapshot = Checkpointer(str(tmp_path)).restore_latest(
      {'step': 0, 'w': np.zeros(3, np.float32)})

  assert snapshot is not None
  assert int(snapshot.arrays['step']) == 3
  assert not os.path.exists(tmp_path / 'corrupt_checkpoints')


@pytest.mark.parametrize('template, difference', [
    ({'w': np.zeros(4, np.float32)}, "['w'] is float32[3] there, float32[4] now"),
    ({'w': np.zeros(3, np.float16)}, "['w'] is float32[3] there, float16[3] now"),
    ({'w': np.zeros(3, np.float32), 'v': np.zeros(1, np.float32)},
     "['v'] is missing from it"),
])
def test_intact_checkpoint_of_other_shapes_is_refused_and_kept(
    tmp_path, template, difference):
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  checkpointer.save(checkpointing.Snapshot(
      step=5, arrays={'w': np.ones(3, np.float32)}, meta={}))

  with pytest.raises(checkpointing.IncompatibleCheckpoint,
                     match=re.escape(f'does not fit this code: {difference};')):
    checkpointer.restore_latest(template)

  assert checkpointer.steps() == [5]
  assert not os.path.exists(tmp_path / 'corrupt_checkpoints')


# SIGINT outside the training steps, where Python raises KeyboardInterrupt
# (as in a terminal: a job started in the background inherits SIGINT ignored).
_SIGINT_AT_START_UP = """
    import os, signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from lettercnn import train
    def init(self, *args, **kwargs):
      os.kill(os.getpid(), signal.SIGINT)
      real(self, *args, **kwargs)
    real = train.ChunkedTrainStep.__init__
    train.ChunkedTrainStep.__init__ = init
    """
_SIGINT_IN_THE_FINAL_EVALUATION = """
    import os, signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from lettercnn import train
    def confusion(*args, **kwargs):
      os.kill(os.getpid(), signal.SIGINT)
      return real(*args, **kwargs)
    real = train.val_confusion
    train.val_confusion = confusion
    """


@pytest.mark.parametrize('fault', [_SIGINT_AT_START_UP,
                                   _SIGINT_IN_THE_FINAL_EVALUATION])
def test_sigint_outside_the_steps_is_one_line_and_resumes(
    uninterrupted_run, tmp_path, data_dir, fault):
  workdir = str(tmp_path)
  exit_code, _, stderr = run_main(workdir, data_dir, fault)

  assert exit_code == 128 + signal.SIGINT, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  assert len([l for l in stderr.splitlines()
              if 'stopped by signal 2' in l]) == 1, stderr[-3000:]
  assert read_status(workdir)['status'] == 'running'
  finish(workdir, data_dir)
  _assert_same_run(uninterrupted_run, workdir)
