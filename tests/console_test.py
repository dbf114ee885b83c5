"""What a run prints: start, progress, a line per epoch and the end.

Step scalars go to TensorBoard only; absl's --verbosity=1 brings them back
into the log, with every library's INFO lines.
"""

import subprocess

from conftest import REPO_ROOT
from run_helpers import command


def _run(workdir, data_dir, *flags):
  return subprocess.run(
      command(workdir, data_dir, '--config.num_epochs=1', *flags),
      cwd=REPO_ROOT, capture_output=True, text=True, check=True)


def test_the_console_shows_the_run_not_every_scalar(tmp_path, data_dir):
  quiet = _run(tmp_path / 'quiet', data_dir)
  verbose = _run(tmp_path / 'verbose', data_dir, '--verbosity=1')

  log = quiet.stderr.splitlines()
  assert len([l for l in log if '] Epoch 1/1: train loss' in l]) == 1
  assert not [l for l in log if 'logging_writer.py' in l], quiet.stderr
  assert not [l for l in log if "backend 'tpu'" in l], quiet.stderr
  assert not [l for l in log if 'oneDNN' in l], quiet.stderr
  assert not [l for l in log if '] Reusing dataset' in l], quiet.stderr
  assert quiet.stdout.splitlines() == [
      f'workdir: {tmp_path / "quiet"}',
      quiet.stdout.splitlines()[-1]]
  assert quiet.stdout.splitlines()[-1].startswith(f'{tmp_path / "quiet"}: ')
  verbose_log = verbose.stderr.splitlines()
  assert [l for l in verbose_log if 'logging_writer.py' in l]
  assert [l for l in verbose_log if '] Reusing dataset' in l]
