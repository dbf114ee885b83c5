"""lettercnn.cpu_devices: how many host devices a CPU run splits its batch over."""

import os
import subprocess

from conftest import REPO_ROOT
import pytest
from run_helpers import command
from run_helpers import read_status
from run_helpers import run_selected_cases

from lettercnn import cpu_devices


@pytest.mark.parametrize('batch_size, cpu_count, expected', [
    (1, 2, 1), (8, 2, 1), (32, 2, 1), (64, 2, 1), (127, 2, 1), (128, 2, 2),
    (129, 2, 1), (256, 2, 2), (192, 4, 3), (256, 4, 4), (512, 4, 4),
    (128, 8, 2), (128, 1, 1)])
def test_a_batch_takes_the_most_devices_it_fills(batch_size, cpu_count,
                                                 expected):
  """The most devices the batch divides over, 64 images or more each."""
  assert cpu_devices.count_for(batch_size, cpu_count) == expected


@pytest.mark.parametrize('flags, expected', [
    ('', None), ('--xla_cpu_enable_fast_math=false', None),
    ('--xla_force_host_platform_device_count=4', 4),
    ('--xla_force_host_platform_device_count=1 --xla_dump_to=/tmp/x', 1)])
def test_a_count_forced_in_xla_flags_is_read(monkeypatch, flags, expected):
  monkeypatch.setenv('XLA_FLAGS', flags)
  assert cpu_devices.forced_count() == expected


# (batch_size, cpu_devices, XLA_FLAGS' forced count, num_devices) -> the
# devices the run must train on.
_RUNS = {(128, 2, None, 0): 2, (192, 3, None, 0): 3, (2, 2, None, 0): 1,
         # One device of the two XLA_FLAGS forces: its state unreplicated
         # for evaluation and the checkpoint lose their device axis.
         (2, 2, 2, 1): 1}


@pytest.fixture(scope='module')
def runs(request, tmp_path_factory, data_dir):
  """Each case's run of main to its end: (status.json, stderr)."""

  def run(case):
    batch_size, cpu_count, forced, num_devices = case
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    if forced:
      env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={forced}'
    workdir = str(tmp_path_factory.mktemp('cpu_devices'))
    process = subprocess.run(
        command(workdir, data_dir, '--config.num_epochs=1',
                f'--config.batch_size={batch_size}',
                f'--config.cpu_devices={cpu_count}',
                f'--config.num_devices={num_devices}'),
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    assert process.returncode == 0, process.stderr[-3000:]
    return read_status(workdir), process.stderr

  return run_selected_cases(request, 'test_main_trains_on_the_configs_devices',
                            'case', run)


@pytest.mark.parametrize('case', list(_RUNS), ids=[
    f'batch{b}-cpu_devices{c}-forced{f}-num_devices{n}'
    for b, c, f, n in _RUNS])
def test_main_trains_on_the_configs_devices(runs, case):
  """Without cpu_devices.start, JAX starts one CPU device unless forced."""
  status, stderr = runs[case]
  assert status['num_devices'] == _RUNS[case]
  assert status['config']['cpu_devices'] == case[1]
  assert f'Training on {_RUNS[case]} cpu device(s)' in stderr
  assert status['best']['val_accuracy'] > 0
