"""Finds the best learning rate and the edge: `python -m lettercnn.study`.

  python -m lettercnn.study --config=CONFIG --workdir=DIR [-j N]
      [--eta=3] [--seeds=3] [--decades=2 --per_decade=3 | --rates=R1,R2,...]
      [--rungs=K] [--config.FIELD=VALUE ...]

Runs the range test and the curvature bound (lettercnn.lr_find), centres a
log grid of rates on the range test's recommendation, searches it with
successive halving over epochs, trains the best rate (and the runner-up, when
the seeds cannot separate them) to the end with --seeds seeds, and trains the
rate just below the first failure to the end. Writes DIR/study.md (also
printed), DIR/study.json and DIR/study.png; DIR/runs holds one ordinary run
folder a run. The rules are in lettercnn.study.halving and docs/study.md.

Rerunning the same command resumes the study; a study with other settings,
or a folder that holds something else, is refused (exit 2), and so is a
second study while one runs in DIR (exit 75). Bad settings are one line,
exit 2, before any data is built. -j N trains N runs at once through the
sweep launcher's scheduler. Exit status: 0 once answered; 1 if a run failed;
130 after SIGINT or SIGTERM (rerun to resume).
"""

import os
import sys
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lettercnn import config_loading
from lettercnn import cpu_devices
from lettercnn import distributed
from lettercnn import errors
from lettercnn.run import workdir as workdir_guard
from lettercnn.study import answer
from lettercnn.study import run as study_run
from lettercnn.sweep import launch

FLAGS = flags.FLAGS

_WORKDIR = flags.DEFINE_string('workdir', None, 'The study folder.',
                               required=True)
_JOBS = flags.DEFINE_integer('jobs', 1, 'Runs trained at once.', lower_bound=1,
                             short_name='j')
_ETA = flags.DEFINE_integer('eta', 3, 'Successive halving keeps the best 1/eta '
                            'of the runs at each rung.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds the best rate is confirmed '
                              'with (seed 0 is the search\'s run).')
_DECADES = flags.DEFINE_float('decades', 2.0, 'The grid reaches this many '
                              'decades either side of the range test\'s rate.')
_PER_DECADE = flags.DEFINE_integer('per_decade', 3, 'Rates a decade.')
_RATES = flags.DEFINE_list('rates', None, 'The grid\'s rates outright (no '
                           'range test): R1,R2,...')
_RUNGS = flags.DEFINE_integer('rungs', None, 'Rungs of the search (default: '
                              'as many as the grid allows).')
config_loading.define_config_flag()


def config_overrides(argv: Sequence[str]) -> tuple[str, ...]:
  """The --config.FIELD=VALUE arguments of `argv`, as the runs get them."""
  overrides, args = [], list(argv[1:])
  while args:
    arg = args.pop(0)
    if arg.startswith('--config.'):
      if '=' not in arg and args:
        arg = f'{arg}={args.pop(0)}'
      overrides.append(arg)
  return tuple(overrides)


def _rates(values: list[str] | None) -> tuple[float, ...]:
  if values is None:
    return ()
  try:
    return tuple(float(v) for v in values)
  except ValueError as e:
    raise errors.InputError(f'--rates: {e}') from e


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}',
                         exitcode=errors.BAD_INPUT)
  distributed.quiet_libraries()
  workdir = _WORKDIR.value
  python = study_run.python_for_runs()
  try:
    cpu_devices.start(FLAGS.config)
    if _RATES.value is not None and not _RATES.value:
      raise errors.InputError('--rates= holds no rates')
    settings = study_run.Settings(
        config_path=os.path.normpath(
            config_flags.get_config_filename(FLAGS['config'])),
        overrides=tuple(launch.normalized_overrides(
            config_overrides(sys.argv)).splitlines()), rates=_rates(_RATES.value),
        decades=_DECADES.value, per_decade=_PER_DECADE.value, eta=_ETA.value,
        seeds=_SEEDS.value, rungs=_RUNGS.value)
    config = study_run.check_settings(settings)
    study_run.check_workdir(workdir, settings)
    launch.set_pythonpath()
    with workdir_guard.locked(workdir):
      study_run.check_workdir(workdir, settings)
      study_run.record_settings(workdir, settings)
      grid = study_run.place_grid(workdir, settings, python)
      print(f'[study] {len(grid.rates)} rates: '
            + ', '.join(f'{r:g}' for r in grid.rates), flush=True)
      plan, _ = study_run.train_until_done(workdir, settings, config,
                                           grid.rates, jobs=_JOBS.value,
                                           python=python)
      study_run.log_plan(plan)
      runs_dir = os.path.join(workdir, study_run.RUNS_DIR)
      trials, statuses = study_run.load_trials(runs_dir, grid.rates,
                                               settings.seeds)
      summary = answer.summarize(plan, trials, statuses, grid.rates,
                                 grid.range_test, settings.as_json(), config)
      text = answer.write(workdir, summary)
      study_run.write_hparams(runs_dir)
  except launch.Interrupted:
    print('[study] interrupted; rerun the same command to resume.',
          file=sys.stderr)
    sys.exit(launch.INTERRUPTED_EXIT)
  except (errors.InputError, workdir_guard.Busy,
          study_run.StudyFailed) as e:
    errors.fail('study', e)
  print(text)
  logging.info('study written to %s', workdir)


if __name__ == '__main__':
  app.run(main, flags_parser=config_loading.flags_parser('study'))
