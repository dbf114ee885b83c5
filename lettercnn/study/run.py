"""A study into DIR: the range test, the search, the confirmation, the answer.

DIR holds, besides what `lettercnn.study.answer` writes:

  study_settings.json  the command's settings, written by the first study
  lr_find/             the range test (lettercnn.lr_find's folder)
  runs/<name>/         one ordinary run folder a rate (and a seed), trained
                       by `python -m lettercnn.main` through the sweep
                       launcher's scheduler, paused at the rungs with
                       --until_epoch

Nothing else says where the study stands: each pass reads the runs, asks
`halving.study_plan` what is missing and trains that, so a study killed at
any moment resumes where its runs are.
"""

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any, Sequence

from absl import logging

from lettercnn import config_checks
from lettercnn import config_loading
from lettercnn import errors
from lettercnn import files
from lettercnn.run import events
from lettercnn.run import status as run_status
from lettercnn.run import workdir as workdir_guard
from lettercnn.study import halving
from lettercnn.study import rates as study_rates
from lettercnn.sweep import grid
from lettercnn.sweep import launch

SETTINGS_FILE = 'study_settings.json'
RANGE_TEST_DIR = 'lr_find'
RUNS_DIR = 'runs'


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a study is: a rerun with other settings is another study."""
  config_path: str
  overrides: tuple[str, ...] = ()
  rates: tuple[float, ...] = ()  # Empty: centred on the range test's rate.
  decades: float = 2.0
  per_decade: int = 3
  eta: int = 3
  seeds: int = 3
  rungs: int | None = None  # None: as many as the grid allows.

  def as_json(self) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclasses.dataclass(frozen=True)
class Grid:
  """The study's rates and what placed them."""
  rates: list[float]
  range_test: dict[str, Any] | None


def check_settings(settings: Settings) -> Any:
  """The study's config, once every setting is checked: one line if not.

  Raises:
    errors.InputError: a bad setting, config file, field or value.
  """
  if settings.eta < 2:
    raise errors.InputError(f'--eta={settings.eta}: successive halving keeps '
                            '1/eta of the runs at each rung; eta must be >= 2')
  if settings.seeds < 1:
    raise errors.InputError(f'--seeds={settings.seeds} must be at least 1')
  if settings.rungs is not None and settings.rungs < 1:
    raise errors.InputError(f'--rungs={settings.rungs} must be at least 1')
  if settings.rates:
    study_rates.check_rates(settings.rates, '--rates')
  else:
    if settings.per_decade < 1:
      raise errors.InputError(
          f'--per_decade={settings.per_decade} must be at least 1')
    if not 0 < settings.decades <= 20:
      raise errors.InputError(
          f'--decades={settings.decades:g} must be above 0 and at most 20 '
          '(a float32 rate spans about 83 decades)')
  for override in settings.overrides:
    if override.split('=', 1)[0] == '--config.learning_rate':
      raise errors.InputError(
          'the study sets learning_rate itself, one run a rate; give the '
          'rates with --rates instead of --config.learning_rate')
  config = config_loading.load_config(settings.config_path,
                                      list(settings.overrides))
  config_checks.check_config(config)
  if not settings.rates:
    config_checks.check_lr_find(config)
  for rate in settings.rates:
    config_checks.check_config(config_loading.load_config(
        settings.config_path,
        [*settings.overrides, f'--config.learning_rate={rate!r}']))
  return config


def check_workdir(workdir: str, settings: Settings) -> None:
  """Refuses a folder that holds something else, or another study.

  Raises:
    errors.InputError: naming what is there.
  """
  if not os.path.lexists(workdir):
    return
  if not os.path.isdir(workdir):
    raise errors.InputError(f'workdir {workdir} is not a folder')
  path = os.path.join(workdir, SETTINGS_FILE)
  if not os.path.exists(path):
    others = sorted(set(os.listdir(workdir)) - {workdir_guard.LOCK_FILE})
    if others:
      shown = ', '.join(others[:3])
      raise errors.InputError(
          f'workdir {workdir} holds files no study wrote ({shown}); pass an '
          'empty or new folder')
    return
  try:
    with open(path) as f:
      recorded = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.InputError(f'{path} does not read ({e})') from e
  if recorded != settings.as_json():
    changed = sorted(k for k in settings.as_json()
                     if recorded.get(k) != settings.as_json()[k])
    raise errors.InputError(
        f'workdir {workdir} holds another study (its {", ".join(changed)} '
        f'differ; see {path}); rerun it with the same settings to resume it, '
        'or pass another --workdir')


def _say(line: str) -> None:
  print(f'[study] {line}', flush=True)


def _range_test(workdir: str, settings: Settings,
                python: str) -> dict[str, Any]:
  """lr_find's result in DIR/lr_find, run first if it is not there."""
  folder = os.path.join(workdir, RANGE_TEST_DIR)
  path = os.path.join(folder, 'lr_find.json')
  if not os.path.exists(path):
    _say(f'range test: {python} -m lettercnn.lr_find into {folder}')
    code = subprocess.run(
        [python, '-m', 'lettercnn.lr_find',
         f'--config={settings.config_path}', f'--workdir={folder}',
         *settings.overrides], check=False).returncode
    if code != 0:
      raise StudyFailed(f'the range test failed (exit status {code})',
                        code if code > 0 else errors.FAILED)
  with open(path) as f:
    return json.load(f)


def place_grid(workdir: str, settings: Settings, python: str) -> Grid:
  """The settings' rates, or the lattice around the range test's rate."""
  if settings.rates:
    return Grid(sorted(settings.rates), None)
  result = _range_test(workdir, settings, python)
  rates = study_rates.log_grid(result['recommended'], settings.decades,
                               settings.per_decade)
  return Grid(rates, result)


class StudyFailed(Exception):
  """A run or the range test failed; `exit_code` is the study's status."""

  def __init__(self, message: str, code: int) -> None:
    super().__init__(message)
    self.exit_code = code


def val_accuracies(run_dir: str, status: dict[str, Any]) -> tuple[float, ...]:
  """The run's validation accuracy after each epoch up to its status's step.

  Events past that step belong to an epoch the run will train again.
  """
  steps_per_epoch = status['steps_per_epoch']
  scalars = events.read_scalars(run_dir).get('val_accuracy', [])
  by_epoch = {step // steps_per_epoch: value for step, value in scalars
              if step <= status['step'] and step % steps_per_epoch == 0}
  return tuple(by_epoch[e] for e in sorted(by_epoch))


def load_trials(runs_dir: str, grid_rates: Sequence[float],
                seeds: int) -> tuple[list[halving.Trial], dict[str, Any]]:
  """The study's runs as trials (a run not started: no epochs), and the
  statuses of those that have one, by name.

  Raises:
    errors.InputError: a run's status.json does not read.
  """
  trials, statuses = [], {}
  for rate in grid_rates:
    for seed in range(seeds):
      name = study_rates.run_name(rate, seed)
      run_dir = os.path.join(runs_dir, name)
      status = run_status.read(run_dir) if os.path.isdir(run_dir) else None
      if status is None:
        if seed == 0:
          trials.append(halving.Trial(name, rate, seed))
        continue
      statuses[name] = status
      trials.append(halving.Trial(name, rate, seed,
                                  val_accuracies(run_dir, status),
                                  status['status']))
  return trials, statuses


def plan_of(trials: Sequence[halving.Trial], statuses: dict[str, Any],
            settings: Settings, config: Any) -> tuple[halving.Plan, list[int]]:
  """The study's plan from its trials, and the rung epochs."""
  num_classes = next((s['num_classes'] for s in statuses.values()), None)
  chance = 1.0 / num_classes if num_classes else 0.0
  rungs = halving.rung_epochs(config.num_epochs, settings.eta,
                              len({t.rate for t in trials}), settings.rungs)
  plan = halving.study_plan(trials, rungs, settings.eta, settings.seeds,
                            chance, config.not_converged_margin_points)
  return plan, rungs


def _points(plan: halving.Plan, trials: Sequence[halving.Trial],
            config: Any, config_path: str) -> list[grid.Run]:
  """The runs to launch for `plan.train`, each with its rate, seed and stop."""
  known = {t.name: (t.rate, t.seed) for t in trials}
  points = []
  for name, until in plan.train.items():
    rate, seed = plan.new.get(name) or known[name]
    overrides = [f'--config.learning_rate={rate!r}']
    if seed:
      overrides.append(f'--config.seed={config.seed + seed}')
    if until is not None:
      overrides.append(f'--until_epoch={until}')
    points.append(grid.Run(name, config_path, tuple(overrides)))
  return points


def train_until_done(workdir: str, settings: Settings, config: Any,
                     grid_rates: Sequence[float], jobs: int,
                     python: str) -> tuple[halving.Plan, list[int]]:
  """Trains what the plan asks, pass after pass, until it asks nothing.

  Raises:
    StudyFailed: a run failed or was busy, or made no progress.
    launch.Interrupted: SIGINT or SIGTERM; the runs are stopped.
  """
  runs_dir = os.path.join(workdir, RUNS_DIR)
  os.makedirs(runs_dir, exist_ok=True)
  previous = None
  while True:
    trials, statuses = load_trials(runs_dir, grid_rates, settings.seeds)
    plan, rungs = plan_of(trials, statuses, settings, config)
    if plan.done:
      return plan, rungs
    progress = (trials, plan.train)
    if progress == previous:
      raise StudyFailed(f'the runs {", ".join(plan.train)} made no progress '
                        'in the last pass; see their log.txt', errors.FAILED)
    previous = progress
    points = _points(plan, trials, config, settings.config_path)
    where = ', '.join(sorted({'end' if e is None else f'epoch {e}'
                              for e in plan.train.values()}))
    _say(f'{plan.stage}: {len(points)} run(s) to {where}')
    scheduler = launch.Scheduler(runs_dir, python, settings.overrides, jobs,
                                 launch.cpu_sets(jobs))
    with launch.interruptible(scheduler):
      try:
        scheduler.run(points)
        if scheduler.interrupted:
          raise launch.Interrupted
      except launch.Interrupted:
        scheduler.stop()
        raise
    if scheduler.failures or scheduler.busy:
      raise StudyFailed('run(s) failed: ' + '; '.join(
          scheduler.failures + scheduler.busy), errors.FAILED)


def record_settings(workdir: str, settings: Settings) -> None:
  path = os.path.join(workdir, SETTINGS_FILE)
  if not os.path.exists(path):
    files.atomic_write_text(path, json.dumps(settings.as_json(), indent=1))


def python_for_runs() -> str:
  """The interpreter the runs use: $PYTHON, else this one."""
  return os.environ.get('PYTHON') or sys.executable


def write_hparams(runs_dir: str) -> None:
  """TensorBoard's HParams view of the study's runs, as a sweep's."""
  # pylint: disable=g-import-not-at-top
  import pathlib
  from lettercnn.sweep import hparams
  from lettercnn.sweep import runs as sweep_runs
  # pylint: enable=g-import-not-at-top
  folder = pathlib.Path(runs_dir)
  hparams.write_experiment(folder, sweep_runs.load_sweep(folder).runs)


def log_plan(plan: halving.Plan) -> None:
  for rung in plan.rungs:
    logging.info('rung at epoch %d: ranked %s; failed %s; promoted %s',
                 rung.epoch, rung.ranked, rung.failed, rung.promoted)
