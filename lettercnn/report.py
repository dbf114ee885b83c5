"""Summarises a learning-rate sweep: a table, the best rate and plots.

Usage:
  python -m lettercnn.report SWEEP_DIR

Every subdirectory of SWEEP_DIR that holds a `status.json` and/or TensorBoard
event files is one training run (as `scripts/sweep.sh` lays them out). The
report reads both, so it also works while the sweep is still running, and
writes into SWEEP_DIR:

  summary.md          the table (also printed) and the best learning rate
  summary.csv         the same table, one row per learning rate
  train_loss.png      training loss against epoch, one line per rate
  train_accuracy.png  training accuracy against epoch, one line per rate
  curves.png          the two above side by side
  accuracy_vs_lr.png  final training / best validation accuracy against rate
"""

import csv
import dataclasses
import math
import os
import pathlib
import re
import sys
from collections.abc import Sequence

from absl import logging
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
import numpy as np

from lettercnn import run_status
from lettercnn.errors import InputError

EVENT_FILE_PATTERN = 'events.out.tfevents.*'
# Status of a run that has event files but no status.json yet.
UNKNOWN_STATUS = 'unknown'
# Scalars the report reads; a directory with none of them is not a run.
TAGS = ('train_loss', 'train_accuracy', 'learning_rate', 'epoch_train_loss',
        'epoch_train_accuracy', 'val_loss', 'val_accuracy')
# Learning rate in a run name such as `lr_1e-4` (used when nothing else has it).
_LR_IN_NAME = re.compile(r'lr_?([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)', re.IGNORECASE)

# {tag: (steps, values)} of one run, steps ascending.
Scalars = dict[str, tuple[np.ndarray, np.ndarray]]

CSV_COLUMNS = ('run', 'learning_rate', 'status', 'final_train_loss',
               'final_train_accuracy', 'final_val_loss', 'final_val_accuracy',
               'best_val_accuracy', 'best_val_epoch', 'epochs_run',
               'num_epochs')
TIE_BREAK_RULE = (
    'the highest best validation accuracy among runs that did not diverge; '
    'ties go to the higher final training accuracy, then to the larger '
    'learning rate')


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


def _finite_or_none(value: object) -> float | None:
  """Like `_float_or_none`, but None for inf and nan too."""
  number = _float_or_none(value)
  return number if number is not None and math.isfinite(number) else None


def read_status(run_dir: pathlib.Path) -> dict[str, object] | None:
  """Returns the run's status.json (`run_status.read`), None if absent or bad."""
  try:
    return run_status.read(str(run_dir))
  except run_status.UnreadableStatus as e:
    logging.warning('Ignoring it: %s', e)
    return None


def read_scalars(run_dir: pathlib.Path) -> Scalars:
  """Reads the run's TensorBoard scalars as {tag: (steps, values)}.

  When a resumed run logged a step twice, the later value wins. Steps are
  sorted; values keep non-finite entries.
  """
  if not any(run_dir.glob(EVENT_FILE_PATTERN)):
    return {}
  # Imported here: TensorBoard's reader pulls in TensorFlow, which is slow.
  from lettercnn import tb_events  # pylint: disable=g-import-not-at-top
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
  from_status = _finite_or_none(status.get('steps_per_epoch'))
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
    from_config = _finite_or_none(config.get('learning_rate'))
    if from_config is not None:
      return from_config
  if 'learning_rate' in scalars and scalars['learning_rate'][1].size:
    return _finite_or_none(scalars['learning_rate'][1][0])
  match = _LR_IN_NAME.search(name)
  return _finite_or_none(match.group(1)) if match else None


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
  """
  status_or_none = read_status(run_dir)
  scalars = read_scalars(run_dir)
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

  best_val_accuracy = _finite_or_none(best.get('val_accuracy'))
  best_val_epoch = _finite_or_none(best.get('epoch'))
  if best_val_accuracy is None:
    best_val_accuracy, best_val_epoch = _best_from_events(
        scalars, steps_per_epoch)

  epochs_run = _finite_or_none(status.get('epoch'))
  if epochs_run is None and scalars and steps_per_epoch:
    last_step = max(int(steps[-1]) for steps, _ in scalars.values())
    epochs_run = last_step / steps_per_epoch
  num_epochs = _finite_or_none(status.get('num_epochs'))
  num_classes = _finite_or_none(status.get('num_classes'))

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
  )


def _sort_key(run: RunSummary) -> tuple[bool, float, str]:
  """Largest learning rate first; runs without one last; then by name."""
  has_rate = run.learning_rate is not None
  return (not has_rate, -(run.learning_rate or 0.0), run.name)


def load_sweep(sweep_dir: pathlib.Path) -> list[RunSummary]:
  """Loads every run under `sweep_dir`, largest learning rate first.

  Raises:
    InputError: `sweep_dir` is not a directory, is a single run's workdir, or
      holds no runs.
  """
  if not sweep_dir.is_dir():
    raise InputError(f'{sweep_dir} is not a directory.')
  if (sweep_dir / run_status.STATUS_FILE).is_file():
    raise InputError(
        f'{sweep_dir} is a single run\'s workdir; pass the sweep directory '
        'that holds one such workdir per learning rate.')
  runs = [run for path in sorted(sweep_dir.iterdir()) if path.is_dir()
          for run in [load_run(path)] if run is not None]
  if not runs:
    raise InputError(
        f'No training runs in {sweep_dir}: expected subdirectories holding '
        f'{run_status.STATUS_FILE} and/or TensorBoard event files of '
        'lettercnn.main (run scripts/sweep.sh first).')
  return sorted(runs, key=_sort_key)


def best_run(runs: Sequence[RunSummary]) -> RunSummary | None:
  """The run with the best validation accuracy, by TIE_BREAK_RULE.

  Returns None when every run diverged or has no validation accuracy yet.
  """
  candidates = [run for run in runs
                if not run.diverged and run.best_val_accuracy is not None]
  if not candidates:
    return None
  return max(candidates, key=lambda run: (
      run.best_val_accuracy,
      _finite_or_none(run.final_train_accuracy) or -1.0,
      run.learning_rate or 0.0))


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def format_lr(learning_rate: float | None) -> str:
  """Compact scientific notation as in the config names: 0.0001 -> '1e-4'."""
  if learning_rate is None:
    return '?'
  if learning_rate <= 0 or not math.isfinite(learning_rate):
    return f'{learning_rate:g}'
  mantissa, exponent = f'{learning_rate:.3e}'.split('e')
  return f'{float(mantissa):g}e{int(exponent)}'


def _csv_value(value: object) -> str:
  """A CSV cell: empty for None, full precision for floats."""
  if value is None:
    return ''
  if isinstance(value, float):
    return repr(value)
  return str(value)


def write_csv(runs: Sequence[RunSummary], path: pathlib.Path) -> None:
  """Writes one row per run with CSV_COLUMNS; accuracies are fractions."""
  with path.open('w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(CSV_COLUMNS)
    for run in runs:
      writer.writerow([_csv_value(v) for v in (
          run.name, run.learning_rate, run.status, run.final_train_loss,
          run.final_train_accuracy, run.final_val_loss,
          run.final_val_accuracy, run.best_val_accuracy, run.best_val_epoch,
          run.epochs_run, run.num_epochs)])


def _percent(value: float | None) -> str:
  return '-' if value is None else f'{100 * value:.1f}%'


def _number(value: float | None) -> str:
  return '-' if value is None else f'{value:.4g}'


def _epochs(run: RunSummary) -> str:
  """'30', or '12.5 / 30' for a run that stopped or is stopping early."""
  if run.epochs_run is None:
    return '-'
  done = f'{run.epochs_run:.3g}'
  if run.num_epochs is None or math.isclose(run.epochs_run, run.num_epochs):
    return done
  return f'{done} / {run.num_epochs}'


def markdown_table(runs: Sequence[RunSummary]) -> str:
  """The sweep as a markdown table, one row per run."""
  lines = [
      '| Run | Learning rate | Status | Final train loss | Final train acc '
      '| Final val acc | Best val acc (epoch) | Epochs |',
      '|---|---:|---|---:|---:|---:|---:|---:|',
  ]
  for run in runs:
    best = _percent(run.best_val_accuracy)
    if run.best_val_accuracy is not None and run.best_val_epoch is not None:
      best += f' ({run.best_val_epoch:g})'
    lines.append(
        f'| {run.name} | {format_lr(run.learning_rate)} | {run.status} '
        f'| {_number(run.final_train_loss)} '
        f'| {_percent(run.final_train_accuracy)} '
        f'| {_percent(run.final_val_accuracy)} | {best} | {_epochs(run)} |')
  return '\n'.join(lines)


def best_line(runs: Sequence[RunSummary]) -> str:
  """One sentence naming the best learning rate and how it was chosen."""
  best = best_run(runs)
  if best is None:
    return ('No best learning rate: every run diverged or has no validation '
            'accuracy yet.')
  epoch = ('' if best.best_val_epoch is None
           else f' at epoch {best.best_val_epoch:g}')
  return (f'Best learning rate: {format_lr(best.learning_rate)} ({best.name}, '
          f'best validation accuracy {_percent(best.best_val_accuracy)}'
          f'{epoch}); chosen by {TIE_BREAK_RULE}.')


def _num_classes(runs: Sequence[RunSummary]) -> int | None:
  return next((run.num_classes for run in runs if run.num_classes), None)


def markdown_report(runs: Sequence[RunSummary]) -> str:
  """summary.md: best rate, notes, table and the plots."""
  parts = ['# Learning-rate sweep', '', best_line(runs)]
  unfinished = [run.name for run in runs if not run.finished]
  if unfinished:
    parts += ['', f'Not finished yet ({", ".join(unfinished)}): their rows are '
              'partial and the best rate may change.']
  num_classes = _num_classes(runs)
  if num_classes:
    parts += ['', f'Chance level: {_percent(1 / num_classes)} '
              f'({num_classes} classes).']
  parts += [
      '', markdown_table(runs), '',
      'Final values: at the end of training, where a run diverged, or the '
      'latest logged for an unfinished run. Epochs: completed / planned when '
      'a run stopped early or is still running.', '',
      '![Training curves](curves.png)', '',
      '![Accuracy against learning rate](accuracy_vs_lr.png)', '']
  return '\n'.join(parts)


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------


def _colors(runs: Sequence[RunSummary]) -> dict[str, tuple[float, ...]]:
  """One colour per run along viridis, in table order."""
  cmap = colormaps['viridis']
  count = max(len(runs) - 1, 1)
  return {run.name: cmap(0.9 * i / count) for i, run in enumerate(runs)}


def _label(run: RunSummary) -> str:
  label = f'lr {format_lr(run.learning_rate)}'
  if run.status == run_status.CONVERGED:
    return label
  return f'{label} ({run.status.replace("_", " ")})'


def _draw_curves(ax: Axes, runs: Sequence[RunSummary], metric: str) -> None:
  """Draws `metric` ('train_loss' or 'train_accuracy') against epoch.

  Non-finite values are dropped, so a diverged run's line ends where it
  diverged; that end is marked with an x.
  """
  is_loss = metric == 'train_loss'
  colors = _colors(runs)
  drawn = False
  for run in runs:
    curve = getattr(run, metric)
    if curve is None:
      continue
    keep = np.isfinite(curve.values) & ((curve.values > 0) | (not is_loss))
    epochs = curve.epochs[keep]
    values = curve.values[keep] * (1 if is_loss else 100)
    if not epochs.size:
      continue
    drawn = True
    ax.plot(epochs, values, color=colors[run.name], label=_label(run),
            linewidth=1.2)
    if run.diverged:
      ax.plot(epochs[-1:], values[-1:], 'x', color=colors[run.name],
              markersize=9, markeredgewidth=2)
  ax.set_xlabel('epoch')
  ax.set_title('Training loss' if is_loss else 'Training accuracy')
  ax.grid(True, alpha=0.3)
  if is_loss:
    ax.set_ylabel('loss (log scale)')
    if drawn:
      ax.set_yscale('log')
  else:
    ax.set_ylabel('accuracy (%)')
    ax.set_ylim(0, 100)
  if drawn:
    ax.legend(fontsize='small')
  else:
    ax.text(0.5, 0.5, 'no training curves logged yet', ha='center',
            va='center', transform=ax.transAxes)


def plot_curves(runs: Sequence[RunSummary], out_dir: pathlib.Path) -> None:
  """Writes train_loss.png, train_accuracy.png and curves.png (both)."""
  for metric in ('train_loss', 'train_accuracy'):
    fig = Figure(figsize=(6.4, 4.8))
    _draw_curves(fig.add_subplot(), runs, metric)
    fig.tight_layout()
    fig.savefig(out_dir / f'{metric}.png', dpi=100)
  fig = Figure(figsize=(12.8, 4.8))
  loss_ax, accuracy_ax = fig.subplots(1, 2)
  _draw_curves(loss_ax, runs, 'train_loss')
  _draw_curves(accuracy_ax, runs, 'train_accuracy')
  fig.tight_layout()
  fig.savefig(out_dir / 'curves.png', dpi=100)


def plot_accuracy_vs_lr(runs: Sequence[RunSummary],
                        path: pathlib.Path) -> None:
  """Final training and best validation accuracy against learning rate.

  Diverged rates are red crosses at 0 labelled 'diverged'; the dashed line is
  chance level (1 / number of classes).
  """
  fig = Figure(figsize=(6.4, 4.8))
  ax = fig.add_subplot()
  rated = sorted((run for run in runs if run.learning_rate is not None
                  and run.learning_rate > 0),
                 key=lambda run: run.learning_rate)
  healthy = [run for run in rated if not run.diverged]
  for attribute, marker, label in (
      ('final_train_accuracy', 'o-', 'final training accuracy'),
      ('best_val_accuracy', 's--', 'best validation accuracy')):
    points = [(run.learning_rate, 100 * getattr(run, attribute))
              for run in healthy
              if _finite_or_none(getattr(run, attribute)) is not None]
    if points:
      ax.plot(*zip(*points), marker, label=label)
  diverged = [run.learning_rate for run in rated if run.diverged]
  if diverged:
    ax.plot(diverged, [0] * len(diverged), 'x', color='red', markersize=10,
            markeredgewidth=2, label='diverged')
    for rate in diverged:
      ax.annotate('diverged', (rate, 0), textcoords='offset points',
                  xytext=(0, 8), ha='center', color='red', fontsize='small')
  num_classes = _num_classes(runs)
  if num_classes:
    ax.axhline(100 / num_classes, color='gray', linestyle='--',
               label=f'chance (1/{num_classes})')
  if rated:
    ax.set_xscale('log')
  else:
    ax.text(0.5, 0.5, 'no learning rates known yet', ha='center',
            va='center', transform=ax.transAxes)
  ax.set_ylim(-5, 105)
  ax.set_xlabel('base learning rate (log scale)')
  ax.set_ylabel('accuracy (%)')
  ax.set_title('Accuracy against learning rate')
  ax.grid(True, which='both', alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize='small')
  fig.tight_layout()
  fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def write_report(sweep_dir: pathlib.Path) -> str:
  """Writes all report files into `sweep_dir`; returns the markdown table.

  Raises:
    InputError: see `load_sweep`.
  """
  runs = load_sweep(sweep_dir)
  write_csv(runs, sweep_dir / 'summary.csv')
  (sweep_dir / 'summary.md').write_text(markdown_report(runs))
  plot_curves(runs, sweep_dir)
  plot_accuracy_vs_lr(runs, sweep_dir / 'accuracy_vs_lr.png')
  logging.info('Wrote the report of %d runs into %s.', len(runs), sweep_dir)
  return markdown_table(runs) + '\n\n' + best_line(runs)


def main(argv: Sequence[str] | None = None) -> int:
  """Command line: `python -m lettercnn.report SWEEP_DIR`; returns the code."""
  args = list(sys.argv[1:] if argv is None else argv)
  if len(args) != 1 or args[0].startswith('-'):
    print('Usage: python -m lettercnn.report SWEEP_DIR', file=sys.stderr)
    return 2
  try:
    print(write_report(pathlib.Path(args[0])))
  except InputError as e:
    print(f'report: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  sys.exit(main())
