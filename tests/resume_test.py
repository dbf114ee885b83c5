"""Never lose a run: SIGKILL + resume is bit-identical; corrupt checkpoints fall back."""

import json
import os
import re
import signal
import subprocess
import sys
import time

from conftest import load_config
from conftest import REPO_ROOT
import numpy as np
import pytest

from lettercnn import checkpointing
from lettercnn import tb_events

TINY_RUN = ['--config.examples_per_class=40', '--config.num_epochs=4',
            '--config.batch_size=2',  # Over the two simulated devices.
            '--config.log_every_steps=70', '--config.eval_batch_size=50']


def _command(workdir, data_dir):
  return [sys.executable, '-m', 'lettercnn.main',
          '--config=configs/lr_1e-4.py', f'--workdir={workdir}',
          f'--config.data_dir={data_dir}'] + TINY_RUN


def _run(workdir, data_dir):
  subprocess.run(_command(workdir, data_dir), cwd=REPO_ROOT, check=True,
                 capture_output=True)


def _status(workdir):
  with open(os.path.join(workdir, 'status.json')) as f:
    return json.load(f)


def _finished_checkpoints(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return [d for d in os.listdir(directory) if d.isdigit()]


@pytest.fixture(scope='module')
def uninterrupted_run(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  _run(workdir, data_dir)  # Also builds the dataset for the runs below.
  return workdir


def _interrupt_after_first_checkpoint(workdir, data_dir, sig, delay_s, log):
  """Starts a run, sends `sig` `delay_s` after its first checkpoint; exit code.

  The run's stderr (absl's log) goes to the file `log`.
  """
  with open(log, 'w') as log_file:
    process = subprocess.Popen(_command(workdir, data_dir), cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=log_file)
    deadline = time.monotonic() + 300
    while not _finished_checkpoints(workdir) and time.monotonic() < deadline:
      time.sleep(0.02)
    time.sleep(delay_s)
    process.send_signal(sig)
    return process.wait()


def _assert_same_run(expected_dir, resumed_dir):
  expected, resumed = _status(expected_dir), _status(resumed_dir)
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
  assert _finished_checkpoints(killed), 'no checkpoint before the deadline'
  assert _status(killed)['status'] == 'running', 'run ended before the kill'

  _run(killed, data_dir)

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
  assert max(map(int, _finished_checkpoints(stopped))) == int(
      stop_step.group(1))

  _run(stopped, data_dir)

  _assert_same_run(uninterrupted_run, stopped)


def _tiny_run_config(data_dir):
  """The config `_command` trains, built in-process."""
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
  with pytest.raises(train.Preempted, match='at step 128;') as stopped:
    train.train_and_evaluate(_tiny_run_config(data_dir), workdir)
  assert stopped.value.exit_code == 128 + signal.SIGTERM
  assert _finished_checkpoints(workdir) == ['128']
  assert _status(workdir)['status'] == 'running'
  assert _status(workdir)['step'] == 128
  monkeypatch.undo()

  _run(workdir, data_dir)

  _assert_same_run(uninterrupted_run, workdir)


def test_two_identical_runs_match(uninterrupted_run, tmp_path, data_dir):
  _run(str(tmp_path), data_dir)
  _assert_same_run(uninterrupted_run, str(tmp_path))


def test_finished_run_relaunched_trains_nothing(uninterrupted_run, data_dir):
  workdir = uninterrupted_run
  before = sorted(os.listdir(workdir))
  result = subprocess.run(_command(workdir, data_dir), cwd=REPO_ROOT,
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


def test_checksum_catches_silently_changed_arrays(tmp_path, monkeypatch):
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  checkpointer.save(checkpointing.Snapshot(
      step=5, arrays={'w': np.ones(3, np.float32)}, meta={}))
  real_digest = checkpointing.array_digest
  monkeypatch.setattr(checkpointing, 'array_digest',
                      lambda arrays: 'not ' + real_digest(arrays))
  assert checkpointer.restore_latest({'w': np.zeros(3, np.float32)}) is None
  assert os.path.isdir(tmp_path / 'corrupt_checkpoints' / '5')


def test_saving_a_step_twice_keeps_the_first_checkpoint(tmp_path):
  """A stop signal right after a scheduled save asks for the same step again."""
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  for value in (1.0, 2.0):
    checkpointer.save(checkpointing.Snapshot(
        step=5, arrays={'w': np.full(3, value, np.float32)}, meta={}))

  snapshot = checkpointer.restore_latest({'w': np.zeros(3, np.float32)})

  assert snapshot.step == 5
  assert snapshot.arrays['w'].tolist() == [1.0, 1.0, 1.0]
