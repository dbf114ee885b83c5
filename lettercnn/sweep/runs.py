"""The runs of a sweep folder, read from their status.json and TensorBoard events.

Every subdirectory of a sweep folder that holds a `status.json` and/or
TensorBoard event files is one training run (as `scripts/sweep.sh` lays them
out). Both are read, so a sweep can be summarised while it still runs. A run
whose status.json exists but does not read is counted apart, never summarised.
"""

import dataclasses
import math
import pathlib
import re
from typing import Any

from absl import logging
import numpy as np

from lettercnn.run import events as tb_events
from lettercnn.run import status as run_status
from lettercnn.errors import InputError

# Status of a run that has event files but no status.json yet.
UNKNOWN_STATUS = 'unknown'
# Scalars the report reads; a directory with none of them is not a run.
TAGS = ('train_loss', 'train_accuracy', 'learning_rate', 'epoch_train_loss',
        'epoch_train_accuracy', 'val_loss', 'val_accuracy', 'sharpness',
        'sharpness_limit')
# Learning rate in a run name such as `lr_1e-4` (used when nothing else has it).
_LR_IN_NAME = re.compile(r'lr_?([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)', re.IGNORECASE)

# {tag: (steps, values)} of one run, steps ascending.
Scalars = dict[str, tuple[np.ndarray, np.ndarray]]

@dataclasses.dataclass(frozen=True)
class Curve:
  """One scalar of one run: values against (possibly fractional) epochs."""
  epochs: np.ndarray
  values: np.ndarray


@dataclasses.dataclass(frozen=True)
class RunSummary:
  """What the report knows about one training run (None: not available)."""
  name: str
  learning_rate: float | None
  status: str
  final_train_loss: float | None
  final_train_accuracy: float | None
  final_val_loss: float | None
  final_val_accuracy: float | None
  best_val_accuracy: float | None
  best_val_epoch: float | None
  epochs_run: float | None
  num_epochs: int | None
  num_classes: int | None
  train_loss: Curve | None
  train_accuracy: Curve | None
  # The resolved config from status.json (None without one).
  config: dict[str, Any] | None = None
  # The validation confusion of the final parameters (status.json's
  # 'val_confusion', `confusion.record`), None before the run ended.
  val_confusion: dict[str, Any] | None = None
  # status.json's 'initial_sharpness' (lambda_max, bound, formula), where
  # the run measured it (sharpness_every_steps > 0).
  initial_sharpness: dict[str, Any] | None = None
  # The sharpness measured during training and the limit beside it
  # (`train.write_sharpness`), None where it was not measured.
  sharpness: Curve | None = None
  sharpness_limit: Curve | None = None

  @property
  def finished(self) -> bool:
    return self.status in run_status.FINISHED

  @property
  def diverged(self) -> bool:
    return self.status == run_status.DIVERGED


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _float_or_none(value: object) -> float | None:
  """Returns `value` as a float (inf and nan kept); None if not a number."""
  if value is None or isinstance(value, bool):
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def finite_or_none(value: object) -> float | None:
  """Like `_float_or_none`, but None for inf and nan too."""
  number = _float_or_none(value)
  return number if number is not None and math.isfinite(number) else None


def read_status(run_dir: pathlib.Path) -> dict[str, object] | None:
  """Returns the run's status.json (`run_status.read`), None if absent.

  Raises:
    run_status.UnreadableStatus: it exists but does not read as a status.
  """
  return run_status.read(str(run_dir))


def _report_scalars(run_dir: pathlib.Path) -> Scalars:
  """The run's scalars of TAGS (`tb_events.read_scalars`) as arrays.

  {tag: (steps, values)}. When a resumed run logged a step twice, the later
  value wins. Steps are sorted; values keep non-finite entries.
  """
  if not any(run_dir.glob(tb_events.EVENT_FILE_PATTERN)):
    return {}
  scalars = {}
  for tag, events in tb_events.read_scalars(str(run_dir)).items():
    if tag in TAGS:
      by_step = dict(events)
      steps = sorted(by_step)
      scalars[tag] = (np.array(steps, dtype=np.int64),
                      np.array([by_step[s] for s in steps], dtype=np.float64))
  return scalars


def _steps_per_epoch(status: dict[str, object],
                     scalars: Scalars) -> float | None:
  """Steps per epoch from status.json, else the step of the first epoch end."""
  from_status = finite_or_none(status.get('steps_per_epoch'))
  if from_status and from_status > 0:
    return from_status
  for tag in ('epoch_train_loss', 'epoch_train_accuracy', 'val_accuracy'):
    if tag in scalars and scalars[tag][0].size and scalars[tag][0][0] > 0:
      return float(scalars[tag][0][0])
  return None


def _learning_rate(name: str, status: dict[str, object],
                   scalars: Scalars) -> float | None:
  """The run's base rate: from its config, first logged rate, or its name."""
  config = status.get('config')
  if isinstance(config, dict):
    from_config = finite_or_none(config.get('learning_rate'))
    if from_config is not None:
      return from_config
  if 'learning_rate' in scalars and scalars['learning_rate'][1].size:
    return finite_or_none(scalars['learning_rate'][1][0])
  match = _LR_IN_NAME.search(name)
  return finite_or_none(match.group(1)) if match else None


def _last(scalars: Scalars, *tags: str) -> float | None:
  """Last logged value of the first of `tags` that was logged."""
  for tag in tags:
    if tag in scalars and scalars[tag][1].size:
      return float(scalars[tag][1][-1])
  return None


def _curve(scalars: Scalars, tag: str,
           steps_per_epoch: float | None) -> Curve | None:
  """The scalar `tag` against epoch, or None without data or epoch length."""
  if tag not in scalars or steps_per_epoch is None:
    return None
  steps, values = scalars[tag]
  return Curve(epochs=steps / steps_per_epoch, values=values)


def _best_from_events(
    scalars: Scalars,
    steps_per_epoch: float | None) -> tuple[float | None, float | None]:
  """(best validation accuracy, its epoch) from the logged val_accuracy."""
  if 'val_accuracy' not in scalars:
    return None, None
  steps, values = scalars['val_accuracy']
  finite = np.isfinite(values)
  if not finite.any():
    return None, None
  index = int(np.argmax(np.where(finite, values, -np.inf)))
  epoch = float(steps[index]) / steps_per_epoch if steps_per_epoch else None
  return float(values[index]), epoch


def load_run(run_dir: pathlib.Path) -> RunSummary | None:
  """Summarises one run directory; None if it holds no run of this project.

  status.json values take precedence; the TensorBoard scalars fill in what it
  lacks (no status.json yet, or "final" values still null).

  Raises:
    run_status.UnreadableStatus: its status.json exists but does not read
      (cut short, edited): nothing of the run can be trusted to be its own.
  """
  status_or_none = read_status(run_dir)
  scalars = _report_scalars(run_dir)
  if status_or_none is None and not scalars:
    return None
  status = status_or_none or {}
  final = status.get('final')
  final = final if isinstance(final, dict) else {}
  best = status.get('best')
  best = best if isinstance(best, dict) else {}
  steps_per_epoch = _steps_per_epoch(status, scalars)

  def final_value(key: str, *tags: str) -> float | None:
    from_status = _float_or_none(final.get(key))
    return from_status if from_status is not None else _last(scalars, *tags)

  best_val_accuracy = finite_or_none(best.get('val_accuracy'))
  best_val_epoch = finite_or_none(best.get('epoch'))
  if best_val_accuracy is None:
    best_val_accuracy, best_val_epoch = _best_from_events(
        scalars, steps_per_epoch)

  epochs_run = finite_or_none(status.get('epoch'))
  if epochs_run is None and scalars and steps_per_epoch:
    last_step = max(int(steps[-1]) for steps, _ in scalars.values())
    epochs_run = last_step / steps_per_epoch
  num_epochs = finite_or_none(status.get('num_epochs'))
  num_classes = finite_or_none(status.get('num_classes'))
  config = status.get('config')
  val_confusion = status.get('val_confusion')

  return RunSummary(
      name=run_dir.name,
      learning_rate=_learning_rate(run_dir.name, status, scalars),
      status=str(status.get('status') or UNKNOWN_STATUS),
      final_train_loss=final_value(
          'train_loss', 'epoch_train_loss', 'train_loss'),
      final_train_accuracy=final_value(
          'train_accuracy', 'epoch_train_accuracy', 'train_accuracy'),
      final_val_loss=final_value('val_loss', 'val_loss'),
      final_val_accuracy=final_value('val_accuracy', 'val_accuracy'),
      best_val_accuracy=best_val_accuracy,
      best_val_epoch=best_val_epoch,
      epochs_run=epochs_run,
      num_epochs=None if num_epochs is None else int(num_epochs),
      num_classes=None if num_classes is None else int(num_classes),
      train_loss=_curve(scalars, 'train_loss', steps_per_epoch),
      train_accuracy=_curve(scalars, 'train_accuracy', steps_per_epoch),
      config=config if isinstance(config, dict) else None,
      val_confusion=val_confusion if isinstance(val_confusion, dict) else None,
      initial_sharpness=(status.get('initial_sharpness') if isinstance(
          status.get('initial_sharpness'), dict) else None),
      sharpness=_curve(scalars, 'sharpness', steps_per_epoch),
      sharpness_limit=_curve(scalars, 'sharpness_limit', steps_per_epoch),
  )


def _sort_key(run: RunSummary) -> tuple[bool, float, str]:
  """Largest learning rate first; runs without one last; then by name."""
  has_rate = run.learning_rate is not None
  return (not has_rate, -(run.learning_rate or 0.0), run.name)


@dataclasses.dataclass(frozen=True)
class UnreadableRun:
  """A run folder whose status.json does not read: left out of the report."""
  name: str
  reason: str


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A sweep folder's runs, and those it leaves out."""
  # The readable runs, largest learning rate first.
  runs: list[RunSummary]
  # The runs whose status.json does not read, by name.
  unreadable: list[UnreadableRun]


def load_sweep(sweep_dir: pathlib.Path) -> Sweep:
  """Loads every run under `sweep_dir`, largest learning rate first.

  A run whose status.json does not read is counted apart in `unreadable`,
  named in one warning, and kept out of `runs`: its status, config and
  numbers are unknown, so it belongs in no table, plot or verdict.

  Raises:
    InputError: `sweep_dir` is not a directory, is a single run's workdir, or
      holds no readable runs.
  """
  if not sweep_dir.is_dir():
    raise InputError(f'{sweep_dir} is not a directory.')
  if (sweep_dir / run_status.STATUS_FILE).is_file():
    raise InputError(
        f'{sweep_dir} is a single run\'s workdir; pass the sweep directory '
        'that holds one such workdir per learning rate.')
  runs, unreadable = [], []
  for path in sorted(sweep_dir.iterdir()):
    if not path.is_dir():
      continue
    try:
      run = load_run(path)
    except run_status.UnreadableStatus as e:
      logging.warning('Leaving run %s out of the report: %s.', path.name, e)
      unreadable.append(UnreadableRun(path.name, str(e)))
      continue
    if run is not None:
      runs.append(run)
  if not runs and unreadable:
    names = ', '.join(run.name for run in unreadable)
    raise InputError(
        f'No readable training runs in {sweep_dir}: the '
        f'{run_status.STATUS_FILE} of {names} does not read.')
  if not runs:
    raise InputError(
        f'No training runs in {sweep_dir}: expected subdirectories holding '
        f'{run_status.STATUS_FILE} and/or TensorBoard event files of '
        'lettercnn.main (run scripts/sweep.sh first).')
  return Sweep(sorted(runs, key=_sort_key), unreadable)
