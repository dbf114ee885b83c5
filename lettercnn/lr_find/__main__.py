"""The LR range test and the curvature bound: `python -m lettercnn.lr_find --config=CONFIG`.

Trains the config's model from its initialisation with the same input
pipeline, optimizer and train step as lettercnn.main, the rate rising
exponentially from `lr_find.min_lr` to `lr_find.max_lr` over
`lr_find.num_steps` steps (one rate per step), and stops once the smoothed
loss is not finite or passes `lr_find.stop_factor` times its minimum
(`lettercnn.lr_find.range_test`). Before that it measures the sharpness at
initialisation (`lettercnn.optim.sharpness`) over `sharpness_examples` training
images, and the stable-rate bound it implies for the configured solver.

Writes into --workdir (default runs/lr_find/<config file stem>):

  lr_find.json   rates, raw and smoothed losses, the suggestions, the
                 recommendation, the sharpness and bound, and timings
  lr_find.png    loss against rate (log axis), suggestions and bound marked
  events.out.tfevents.*.lettercnn_lr_find
                 TensorBoard scalars lr_find/loss, lr_find/smoothed_loss and
                 lr_find/learning_rate, by step

and prints the suggestions, the recommendation and why, and the bound. A
rerun replaces these files and no others. Bad settings, and a workdir that
holds files lr_find did not write (a training run's status.json,
checkpoints or event files: `lettercnn.lr_find.workdir`), are one error
line, exit 2, before any data is read; so is a test that stops too early for
a suggestion, after it ran, with nothing written.
"""

import os
from typing import Any

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from lettercnn import config_checks
from lettercnn import config_loading
from lettercnn import cpu_devices
from lettercnn import errors
from lettercnn import formats
from lettercnn.lr_find import workdir as lr_find_workdir
from lettercnn.run import workdir as workdir_guard

FLAGS = flags.FLAGS

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where lr_find.json, lr_find.png and the TensorBoard '
    'events go (default: runs/lr_find/<config file stem>).')
config_loading.define_config_flag()


def _format_rate(rate: float | None) -> str:
  """`formats.rate` to 2 significant digits; 'none' where there is none."""
  return formats.rate(rate, missing='none', digits=2)


def summary_lines(result: dict[str, Any]) -> list[str]:
  """What lr_find prints: each seed's test, suggestions, recommendation, bound."""
  lines = []
  for curve in result['seeds']:
    stopped = ('stopped at' if curve['steps_run'] < result['num_steps']
               else 'ran to')
    lines.append(f'seed {curve["seed"]}: {curve["steps_run"]} of '
                 f'{result["num_steps"]} steps, {stopped} '
                 f'{_format_rate(curve["rates"][-1])}, loss fell '
                 f'{curve["loss_drop"]:.0%}, bound '
                 f'{_format_rate(curve["bound"])}; ' + ', '.join(
                     f'{name} {_format_rate(rate)}'
                     for name, rate in curve['suggestions'].items()))
  several = len(result['seeds']) > 1
  lines.append('suggestions' + (' (median over seeds; max/min)' if several
                                else '') + ':')
  for name, rate in result['suggestions'].items():
    lines.append(f'  {name:15s} {_format_rate(rate)}' + (
        f'  {result["spread"][name]:.2g}x' if several else ''))
  lines.append(f'recommended: {_format_rate(result["recommended"])} '
               f'({result["reason"]})')
  sharp = result['sharpness']
  lines.append(
      f'sharpness at initialisation: {sharp["lambda_max"]:.4g} over '
      f'{sharp["examples"]} training images ({sharp["iterations"]} power '
      f'iterations over them, started by {sharp["coarse_iterations"]} over '
      f'the first batch; residual {sharp["residual"]:.1e}'
      f'{"" if sharp["converged"] else ", NOT converged"}); stable-rate '
      f'bound {_format_rate(sharp["bound"])} ({sharp["formula"]})')
  over_seeds = result['bound_over_seeds']
  if several and over_seeds is not None:
    lines.append(f'curvature bound over the seeds\' initialisations: median '
                 f'{_format_rate(over_seeds["median"])}, '
                 f'{over_seeds["spread"]:.2g}x')
  if sharp['batch_sharpness'] is not None:
    lines.append('per-example (batch) sharpness: '
                 f'{sharp["batch_sharpness"]:.4g}; bound '
                 f'{_format_rate(sharp["batch_bound"])}')
  return lines


def _remove_if_empty(folder: str) -> None:
  """Removes `folder` if it exists and is empty: a refused run's leaves none."""
  try:
    os.rmdir(folder)
  except OSError:
    pass


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}',
                         exitcode=errors.BAD_INPUT)
  config: ml_collections.ConfigDict = FLAGS.config
  workdir = _WORKDIR.value or config_loading.default_workdir(
      config_flags.get_config_filename(FLAGS['config']),
      root=os.path.join('runs', 'lr_find'))
  created = not os.path.lexists(workdir)
  try:
    cpu_devices.start(config)
    num_devices = config_checks.check_config(config)
    config_checks.check_lr_find(config)
    lr_find_workdir.check(workdir)
    with workdir_guard.locked(workdir):
      # Again under the lock: a run may have started there in between.
      lr_find_workdir.check(workdir)
      # pylint: disable-next=g-import-not-at-top
      from lettercnn.lr_find import run as lr_find_run
      result = lr_find_run.run(config, workdir, num_devices)
  except errors.InputError as e:
    if created:
      _remove_if_empty(workdir)
    errors.fail('lr_find', e)
  print('\n'.join(summary_lines(result)))
  print(f'{workdir}: {lr_find_run.RESULT_FILE}, {lr_find_run.PLOT_FILE} '
        f'({result["timings_s"]["total"]:.1f} s)')


if __name__ == '__main__':
  app.run(main, flags_parser=config_loading.flags_parser('lr_find'))
