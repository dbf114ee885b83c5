"""Two `lettercnn.main --distributed` processes on this machine train as one.

Each process has one CPU device; they meet through a coordinator on
localhost and average gradients over gloo. The reference is one process with
two simulated devices and the same global batch of 2.
"""

import glob
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import REPO_ROOT
from run_helpers import assert_resumed_from
from run_helpers import read_status

# 150 training images, 75 steps an epoch at the global batch of 2: 300 steps;
# 50 validation images in 4 batches, two for each process.
RUN = ['--config.examples_per_class=20', '--config.num_epochs=4',
       '--config.batch_size=2', '--config.log_every_steps=25',
       '--config.eval_batch_size=16']
STEPS_PER_EPOCH = 75
# The longest a launch of both processes may take, start-up included.
_LAUNCH_TIMEOUT_S = 240
# How far the first epoch's parameters may be from those of one device
# training the same global batch. The two sum the batch's gradients in a
# different order; the first epoch at this rate amplifies that rounding to
# at most about 6e-4 in any parameter, while without the processes' gradient
# mean every array differs by more than 1.5e-2.
_ONE_DEVICE_ATOL = 5e-3
# How soon process 0 must exit once process 1 has died.
_DEATH_NOTICED_S = 30
# How soon process 1 must exit once process 0, the coordinator, has died.
_COORDINATOR_DEATH_NOTICED_S = 60

_RUN_MODULE = """
import runpy, sys
sys.argv = ['lettercnn.main'] + sys.argv[1:]
runpy.run_module('lettercnn.main', run_name='__main__')
"""

# Process 0 blocks after its checkpoint of the second epoch, so that the
# test kills both processes while the run is mid-way, never after its end.
# A run ends (exit code 0) once it has saved the first epoch's checkpoint.
_END_AFTER_FIRST_CHECKPOINT = """
import os
from lettercnn.run import checkpoints as checkpointing
_save = checkpointing.Checkpointer.save
def save(self, snapshot):
  _save(self, snapshot)
  if snapshot.step >= {steps}:
    os._exit(0)
checkpointing.Checkpointer.save = save
""".format(steps=STEPS_PER_EPOCH)

_HANG_AFTER_SECOND_CHECKPOINT = """
import time
from lettercnn.run import checkpoints as checkpointing
_save = checkpointing.Checkpointer.save
def save(self, snapshot):
  _save(self, snapshot)
  if snapshot.step >= 2 * {steps}:
    time.sleep(600)
checkpointing.Checkpointer.save = save
""".format(steps=STEPS_PER_EPOCH)


def _signal_self_at_check(number: int, signum: int) -> str:
  """Python that sends `signum` to its own process at the number-th stop check.

  The checks come before each piece of the training loop, so the step where
  the signal lands is the same in every run.
  """
  return f"""
import os
from lettercnn import train
from lettercnn.run import signals
_requested = signals.StopSignals.requested
_calls = [0]
def requested(self):
  _calls[0] += 1
  if _calls[0] == {number}:
    os.kill(os.getpid(), {int(signum)})
  return _requested(self)
signals.StopSignals.requested = requested
"""


def _exit_at_check(number: int) -> str:
  """Python that ends its process normally (exit code 0) at a stop check.

  It prints `leaving at TIME` first, TIME from time.time().
  """
  return f"""
import sys
import time
from lettercnn.run import signals
_requested = signals.StopSignals.requested
_calls = [0]
def requested(self):
  _calls[0] += 1
  if _calls[0] == {number}:
    print(f'leaving at {{time.time()}}', file=sys.stderr, flush=True)
    sys.exit(0)
  return _requested(self)
signals.StopSignals.requested = requested
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


class _Launch:
  """Both processes of one `--distributed` run, their output in files."""

  def __init__(self, workdir, data_dir, logs, faults=('', ''),
               overrides=()):
    port = _free_port()
    self.processes, self.logs = [], []
    for index, fault in enumerate(faults):
      args = [sys.executable, '-c', textwrap.dedent(fault) + _RUN_MODULE,
              '--config=configs/lr_1e-3.py', f'--workdir={workdir}',
              f'--config.data_dir={data_dir}', *RUN, *overrides,
              '--distributed', f'--coordinator_address=localhost:{port}',
              '--num_processes=2', f'--process_id={index}']
      launch = len(os.listdir(logs)) // 2
      out, err = (logs / f'{launch}-{index}.{name}' for name in ('out', 'err'))
      self.logs.append((out, err))
      with open(out, 'w') as stdout, open(err, 'w') as stderr:
        self.processes.append(subprocess.Popen(
            args, cwd=REPO_ROOT, stdout=stdout, stderr=stderr,
            env={**os.environ,
                 'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}))

  @property
  def pids(self) -> list[int]:
    return [p.pid for p in self.processes]

  def wait(self, timeout=_LAUNCH_TIMEOUT_S) -> list[int]:
    """Both exit codes, once both processes have ended."""
    deadline = time.monotonic() + timeout
    try:
      return [p.wait(max(1.0, deadline - time.monotonic()))
              for p in self.processes]
    finally:
      self.kill()

  def kill(self) -> None:
    for process in self.processes:
      if process.poll() is None:
        process.kill()
        process.wait()

  def stdout(self, index: int) -> str:
    return self.logs[index][0].read_text()

  def stderr(self, index: int) -> str:
    return self.logs[index][1].read_text()


def _start_reference(workdir, data_dir, overrides=(),
                     fault='') -> subprocess.Popen:
  """One process with two devices (conftest's XLA_FLAGS), the same run."""
  return subprocess.Popen([sys.executable, '-c', fault + _RUN_MODULE,
                           '--config=configs/lr_1e-3.py',
                           f'--workdir={workdir}',
                           f'--config.data_dir={data_dir}', *RUN, *overrides],
                          cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def _params_at(workdir, step: int) -> dict:
  """The parameters of WORKDIR's checkpoint at `step`."""
  from lettercnn.run import checkpoints as checkpointing  # pylint: disable=g-import-not-at-top
  reader = checkpointing.CheckpointReader(workdir)
  try:
    return reader.read(step).arrays['state']['params']
  finally:
    reader.close()


def _checkpoint_steps(workdir) -> list[int]:
  folder = os.path.join(workdir, 'checkpoints')
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def _event_file_pids(workdir) -> set[int]:
  """The pids of the processes that wrote WORKDIR's TensorBoard events."""
  names = glob.glob(os.path.join(workdir, '**', 'events.out.tfevents.*'),
                    recursive=True)
  return {int(os.path.basename(n).split('.')[-3]) for n in names}


def test_two_processes_train_as_one_and_resume_after_sigkill_and_sigterm(
    tmp_path, data_dir):
  # The references train beside the first launch, which mostly waits.
  reference_dir = str(tmp_path / 'reference')
  reference_run = _start_reference(reference_dir, data_dir)
  # The same global batch on one device: its gradient is the mean over the
  # whole batch, as the processes' gradient mean must give it.
  one_device_dir = str(tmp_path / 'one_device')
  one_device_run = _start_reference(
      one_device_dir, data_dir,
      ['--config.num_devices=1', '--config.cpu_devices=1'],
      fault=_END_AFTER_FIRST_CHECKPOINT)
  workdir, logs = str(tmp_path / 'run'), tmp_path / 'logs'
  logs.mkdir()

  # 1. SIGKILL of both processes, mid-run, after the second epoch's save.
  killed = _Launch(workdir, data_dir, logs,
                   faults=(_HANG_AFTER_SECOND_CHECKPOINT, ''))
  deadline = time.monotonic() + _LAUNCH_TIMEOUT_S
  while (2 * STEPS_PER_EPOCH not in _checkpoint_steps(workdir)
         if os.path.isdir(os.path.join(workdir, 'checkpoints')) else True):
    assert time.monotonic() < deadline, killed.stderr(0)[-3000:]
    assert None in [p.poll() for p in killed.processes], (
        killed.stderr(0)[-3000:])
    time.sleep(0.2)
  for process in killed.processes:
    process.send_signal(signal.SIGKILL)
  assert killed.wait() == [-signal.SIGKILL] * 2
  # The first epoch's parameters are the one-device run's, up to rounding:
  # without the gradient mean each process would follow its own half.
  _, one_device_log = one_device_run.communicate(timeout=_LAUNCH_TIMEOUT_S)
  assert one_device_run.returncode == 0, one_device_log[-3000:]
  assert read_status(one_device_dir)['num_devices'] == 1
  params = _params_at(workdir, STEPS_PER_EPOCH)
  one_device = _params_at(one_device_dir, STEPS_PER_EPOCH)
  for layer in params:
    for name in params[layer]:
      np.testing.assert_allclose(params[layer][name], one_device[layer][name],
                                 rtol=0, atol=_ONE_DEVICE_ATOL,
                                 err_msg=f'{layer}/{name}')
  assert read_status(workdir)['status'] == 'running'

  # 2. SIGTERM to process 1 alone, at its 4th stop check after resuming:
  # both processes save that step and exit as preempted.
  stopped = _Launch(workdir, data_dir, logs,
                    faults=('', _signal_self_at_check(4, signal.SIGTERM)))
  assert stopped.wait() == [128 + signal.SIGTERM] * 2, stopped.stderr(0)[-3000:]
  assert (f'Resuming from the checkpoint at step {2 * STEPS_PER_EPOCH}.'
          in stopped.stderr(0))
  stop_step = int(re.search(r'stopped by signal 15 at step (\d+)',
                            stopped.stderr(0)).group(1))
  assert stop_step > 2 * STEPS_PER_EPOCH
  assert max(_checkpoint_steps(workdir)) == stop_step

  _, reference_log = reference_run.communicate(timeout=_LAUNCH_TIMEOUT_S)
  assert reference_run.returncode == 0, reference_log[-3000:]
  reference = read_status(reference_dir)
  assert reference['num_devices'] == 2

  # 3. The resumed run ends where one process with two devices ends.
  finished = _Launch(workdir, data_dir, logs)
  assert finished.wait() == [0, 0], finished.stderr(0)[-3000:]
  assert_resumed_from(workdir, finished.pids[0], finished.stderr(0),
                      stop_step)
  status = read_status(workdir)
  assert status['step'] == 4 * STEPS_PER_EPOCH
  assert status['num_devices'] == 2
  assert status['params_sha256'] == reference['params_sha256']
  # Each validation image counted once, over the two processes' shares.
  assert np.sum(status['val_confusion']['matrix']) == 50
  assert status['val_confusion'] == reference['val_confusion']
  assert status['final'] == pytest.approx(reference['final'], rel=1e-6)
  # Process 0 alone writes events, status.json and what the user reads.
  assert _event_file_pids(workdir) <= {killed.pids[0], stopped.pids[0],
                                       finished.pids[0]}
  assert finished.pids[0] in _event_file_pids(workdir)
  assert glob.glob(os.path.join(workdir, '**', 'status.json'),
                   recursive=True) == [os.path.join(workdir, 'status.json')]
  assert f'{workdir}: {status["status"]} at epoch 4.00' in finished.stdout(0)
  for launch in (killed, stopped, finished):
    # gloo's own C++ prints a line on connecting; lettercnn prints nothing.
    assert [line for line in launch.stdout(1).splitlines()
            if not line.startswith('[Gloo]')] == []
    assert 'Epoch ' not in launch.stderr(1)


@pytest.mark.parametrize('problem', ['learning_rate', 'busy'])
def test_bad_input_is_one_line_from_process_zero_and_stops_both(
    problem, tmp_path, data_dir):
  from lettercnn.run import workdir as workdir_guard  # pylint: disable=g-import-not-at-top
  workdir, logs = str(tmp_path / 'run'), tmp_path / 'logs'
  logs.mkdir()
  if problem == 'learning_rate':
    launch = _Launch(workdir, data_dir, logs,
                     overrides=['--config.learning_rate=0'])
    expected_code, message = 2, 'learning_rate=0.0 must be a positive'
    exit_codes = launch.wait()
  else:
    with workdir_guard.locked(workdir):
      launch = _Launch(workdir, data_dir, logs)
      exit_codes = launch.wait()
    expected_code = workdir_guard.BUSY_EXIT_CODE
    message = 'is in use by process'
  assert exit_codes == [expected_code] * 2
  errors = [line for line in launch.stderr(0).splitlines()
            if line.startswith('lettercnn: error:')]
  assert len(errors) == 1 and message in errors[0], launch.stderr(0)[-2000:]
  assert 'error' not in launch.stderr(1).lower(), launch.stderr(1)[-2000:]
  assert not os.path.exists(os.path.join(workdir, 'status.json'))


def test_a_process_that_dies_stops_the_other(tmp_path, data_dir):
  workdir, logs = str(tmp_path / 'run'), tmp_path / 'logs'
  logs.mkdir()
  launch = _Launch(workdir, data_dir, logs,
                   faults=('', _signal_self_at_check(3, signal.SIGKILL)))
  try:
    assert launch.processes[1].wait(_LAUNCH_TIMEOUT_S) == -signal.SIGKILL
    # Process 0 notices in its next collective, or else the coordination
    # service, when process 1's heartbeats stop, aborts it.
    assert launch.processes[0].wait(_DEATH_NOTICED_S) != 0
  finally:
    launch.kill()
  assert ('another process of this run most likely died' in launch.stderr(0)
          or 'another task died' in launch.stderr(0)), launch.stderr(0)[-3000:]


def _error_lines(text: str) -> list[str]:
  return [line for line in text.splitlines()
          if line.startswith('lettercnn: error:')]


def test_a_process_that_ends_early_does_not_leave_the_other_waiting(
    tmp_path, data_dir):
  from lettercnn import distributed  # pylint: disable=g-import-not-at-top
  workdir, logs = str(tmp_path / 'run'), tmp_path / 'logs'
  logs.mkdir()
  # Process 1 ends normally mid-run, while process 0 goes on into the next
  # collective: process 1 waits in the shutdown barrier, process 0 for it.
  launch = _Launch(workdir, data_dir, logs, faults=('', _exit_at_check(3)))
  try:
    assert launch.processes[1].wait(_LAUNCH_TIMEOUT_S) == 1, (
        launch.stderr(1)[-3000:])
    ended = time.time()
    assert launch.processes[0].wait(_DEATH_NOTICED_S) == 1, (
        launch.stderr(0)[-3000:])
  finally:
    launch.kill()
  left = float(re.search(r'leaving at ([\d.]+)', launch.stderr(1)).group(1))
  assert ended - left < distributed.SHUTDOWN_TIMEOUT_S + 15
  assert len(_error_lines(launch.stderr(1))) == 1, launch.stderr(1)[-3000:]
  assert 'did not end within' in launch.stderr(1)
  assert len(_error_lines(launch.stderr(0))) == 1, launch.stderr(0)[-3000:]
  assert 'another process of this run most likely died' in launch.stderr(0)


def test_the_coordinator_dying_stops_the_other(tmp_path, data_dir):
  workdir, logs = str(tmp_path / 'run'), tmp_path / 'logs'
  logs.mkdir()
  launch = _Launch(workdir, data_dir, logs,
                   faults=(_signal_self_at_check(3, signal.SIGKILL), ''))
  try:
    assert launch.processes[0].wait(_LAUNCH_TIMEOUT_S) == -signal.SIGKILL
    assert launch.processes[1].wait(_COORDINATOR_DEATH_NOTICED_S) == 1, (
        launch.stderr(1)[-3000:])
  finally:
    launch.kill()
  errors = _error_lines(launch.stderr(1))
  assert len(errors) == 1, launch.stderr(1)[-3000:]
  assert 'another process of this run most likely died' in errors[0]


def test_process_shares_split_every_batch_as_one_process_feeds_it(
    tiny_config):
  """Two processes' shares, put together, are one process's batches."""
  from lettercnn.data import input_pipeline  # pylint: disable=g-import-not-at-top
  tiny_config.batch_size = 4
  tiny_config.mean_subtraction = 'image'
  whole = input_pipeline.Pipeline(tiny_config, 2)
  shares = [input_pipeline.Pipeline(
      tiny_config, 2, input_pipeline.ProcessShare((index,), index, 2))
            for index in range(2)]
  for epoch in (0, 1):
    for chunk, *parts in zip(whole.train_chunks(epoch, start_step=3),
                             *(s.train_chunks(epoch, start_step=3)
                               for s in shares)):
      for key in ('image', 'label'):
        np.testing.assert_array_equal(
            np.concatenate([part[key] for part in parts]), chunk[key])
  eval_batch = 3
  batches = list(whole.validation_batches(eval_batch))
  assert len(batches) > 2
  for index, share in enumerate(shares):
    mine = list(share.validation_batches(eval_batch))
    assert len(mine) == len(batches[index::2])
    for batch, expected in zip(mine, batches[index::2]):
      for key in ('image', 'label', 'mask'):
        np.testing.assert_array_equal(batch[key], expected[key])
