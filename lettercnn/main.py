"""Trains one experiment: `python -m lettercnn.main --config=configs/lr_1e-4.py`.

--workdir defaults to runs/<config file stem>. Any config field can be
overridden with --config.FIELD=VALUE; unknown fields are an error.

--until_epoch=E stops once epoch E is trained and checkpointed, the run
unfinished; rerunning continues it exactly (lettercnn.study's rungs).

With --distributed, every process of a multi-process job runs this same
command and they train one model together (`lettercnn.distributed`).
"""

import os
import signal
import sys
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from lettercnn import config_checks
from lettercnn import config_loading
from lettercnn import cpu_devices
from lettercnn import distributed
from lettercnn import errors
from lettercnn.run import status as run_status
from lettercnn.run import workdir as workdir_guard

FLAGS = flags.FLAGS

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, TensorBoard events and '
    'status.json (default: runs/<config file stem>).')
flags.register_validator(
    'workdir', lambda value: value is None or bool(value.strip()),
    message='empty; name a folder, or leave --workdir out to train in '
    'runs/<config file stem>')
_UNTIL_EPOCH = flags.DEFINE_integer(
    'until_epoch', None, 'Stop once this epoch is trained and checkpointed; '
    'the rate schedule stays the full run\'s, and rerunning with a later '
    'epoch, or without the flag, continues the run exactly.', lower_bound=1)
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Train one model across the processes of a '
    'multi-process job with jax.distributed; every process runs the same '
    'command (see the README).')
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'With --distributed: host:port of process 0 '
    '(default: from the cluster environment, e.g. SLURM or Cloud TPU).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'With --distributed: the number of processes '
    '(default: from the cluster environment).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, "With --distributed: this process's index (default: "
    'from the cluster environment).')
config_loading.define_config_flag()


def _fail(error: Exception) -> None:
  distributed.print_error('lettercnn', error)
  sys.exit(errors.exit_code(error))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}',
                         exitcode=errors.BAD_INPUT)
  distributed.quiet_libraries()
  workdir = _WORKDIR.value or config_loading.default_workdir(
      config_flags.get_config_filename(FLAGS['config']))
  try:
    if _DISTRIBUTED.value:
      distributed.initialize(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
                             _PROCESS_ID.value)
    else:
      cpu_devices.start(FLAGS.config)
    distributed.say(f'workdir: {workdir}')
    # Checked and claimed before TensorFlow loads and any data is built.
    num_devices = config_checks.check_config(FLAGS.config)
    with workdir_guard.claimed(FLAGS.config, workdir, num_devices) as existing:
      if existing is not None and existing['status'] in run_status.FINISHED:
        distributed.say('already finished, nothing to train: '
                        f'{run_status.describe(existing)}')
        return
      status = _train(FLAGS.config, workdir, _UNTIL_EPOCH.value)
  except errors.InputError as e:
    _fail(e)
  except KeyboardInterrupt:
    # SIGINT outside the training steps (which turn it into a checkpoint):
    # during start-up or the final evaluation. What is on disk stands.
    logging.warning('stopped by signal %d before training or after its last '
                    'step; rerun the same command to resume from the latest '
                    'checkpoint', signal.SIGINT)
    sys.exit(errors.stopped_by(signal.SIGINT))
  if status['status'] == run_status.RUNNING:
    distributed.say(f'{workdir}: stopped at epoch {status["epoch"]:g} of '
                    f'{FLAGS.config.num_epochs}, as --until_epoch asked; '
                    'rerun to continue')
    return
  distributed.say(f'{workdir}: {run_status.describe(status)}')


def _train(config: ml_collections.ConfigDict, workdir: str,
           until_epoch: int | None) -> dict[str, Any]:
  """`train.train_and_evaluate`, with TensorFlow kept off the accelerators."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  import tensorflow_datasets as tfds
  from lettercnn import train
  from lettercnn.run import signals
  # pylint: enable=g-import-not-at-top
  # JAX owns the accelerators; TensorFlow only feeds data on the CPU.
  tf.config.experimental.set_visible_devices([], 'GPU')
  tfds.disable_progress_bar()
  try:
    return train.train_and_evaluate(config, workdir, until_epoch)
  except signals.Preempted as e:
    logging.warning('%s', e)
    sys.exit(errors.exit_code(e))
  except errors.InputError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if jax.process_count() == 1:
      raise
    # In a multi-process run, most often a collective that failed because
    # another process died. Exit now: a normal exit would wait for the dead
    # process in jax.distributed's shutdown barrier, for up to
    # distributed.SHUTDOWN_TIMEOUT_S, and then print a second line.
    logging.exception('Process %d failed.', jax.process_index())
    print(f'lettercnn: error: process {jax.process_index()} failed '
          f'({type(e).__name__}: {str(e).splitlines()[0][:200]}); when a '
          'collective failed, another process of this run most likely died '
          'first: see its log', file=sys.stderr, flush=True)
    os._exit(errors.FAILED)  # pylint: disable=protected-access


if __name__ == '__main__':
  app.run(main, flags_parser=config_loading.flags_parser(
      'lettercnn', quiet=distributed.launch_index(sys.argv) > 0))
