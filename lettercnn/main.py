"""Trains one experiment: `python -m lettercnn.main --config=configs/lr_1e-4.py`.

--workdir defaults to runs/<config file stem>. Any config field can be
overridden with --config.FIELD=VALUE; unknown fields are an error.
"""

import sys
from typing import Any

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from lettercnn import config_checks
from lettercnn import config_loading
from lettercnn import errors
from lettercnn import library_logs
from lettercnn import run_status
from lettercnn import workdir_guard

FLAGS = flags.FLAGS

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, TensorBoard events and '
    'status.json (default: runs/<config file stem>).')
config_loading.define_config_flag()


def _fail(error: Exception, exit_code: int = 1) -> None:
  print(f'lettercnn: error: {error}', file=sys.stderr, flush=True)
  sys.exit(exit_code)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  workdir = _WORKDIR.value or config_loading.default_workdir(
      config_flags.get_config_filename(FLAGS['config']))
  print(f'workdir: {workdir}', flush=True)
  try:
    # Checked before TensorFlow loads and before any data or compilation.
    num_devices = config_checks.check_config(config)
    with workdir_guard.locked(workdir):
      existing = workdir_guard.existing_run(config, workdir, num_devices)
      if existing is not None and existing['status'] in run_status.FINISHED:
        print('already finished, nothing to train: '
              f'{run_status.describe(existing)}')
        return
      status = _train(config, workdir)
  except workdir_guard.Busy as e:
    _fail(e, workdir_guard.BUSY_EXIT_CODE)
  except errors.InputError as e:
    _fail(e)
  print(f'{workdir}: {run_status.describe(status)}')


def _train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`train.train_and_evaluate`, with TensorFlow kept off the accelerators."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from lettercnn import train
  # pylint: enable=g-import-not-at-top
  # JAX owns the accelerators; TensorFlow only feeds data on the CPU.
  tf.config.experimental.set_visible_devices([], 'GPU')
  tfds.disable_progress_bar()
  library_logs.quiet_orbax()
  try:
    return train.train_and_evaluate(config, workdir)
  except train.Preempted as e:
    logging.warning('%s', e)
    sys.exit(e.exit_code)


if __name__ == '__main__':
  app.run(main, flags_parser=config_loading.flags_parser('lettercnn'))
