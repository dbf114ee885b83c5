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
import math
import os
import pathlib
import sys
from collections.abc import Sequence

from absl import logging
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
import numpy as np

from lettercnn import report_runs
from lettercnn import run_status
from lettercnn.errors import InputError

CSV_COLUMNS = ('run', 'learning_rate', 'status', 'final_train_loss',
               'final_train_accuracy', 'final_val_loss', 'final_val_accuracy',
               'best_val_accuracy', 'best_val_epoch', 'epochs_run',
               'num_epochs')
TIE_BREAK_RULE = (
    'the highest best validation accuracy among runs that did not diverge; '
    'ties go to the higher final training accuracy, then to the larger '
    'learning rate')


def best_run(runs: Sequence[report_runs.RunSummary]) -> report_runs.RunSummary | None:
  """The run with the best validation accuracy, by TIE_BREAK_RULE.

  Returns None when every run diverged or has no validation accuracy yet.
  """
  candidates = [run for run in runs
                if not run.diverged and run.best_val_accuracy is not None]
  if not candidates:
    return None
  return max(candidates, key=lambda run: (
      run.best_val_accuracy,
      report_runs.finite_or_none(run.final_train_accuracy) or -1.0,
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


def write_csv(runs: Sequence[report_runs.RunSummary], path: pathlib.Path) -> None:
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


def _epochs(run: report_runs.RunSummary) -> str:
  """'30', or '12.5 / 30' for a run that stopped or is stopping early."""
  if run.epochs_run is None:
    return '-'
  done = f'{run.epochs_run:.3g}'
  if run.num_epochs is None or math.isclose(run.epochs_run, run.num_epochs):
    return done
  return f'{done} / {run.num_epochs}'


def markdown_table(runs: Sequence[report_runs.RunSummary]) -> str:
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


def best_line(runs: Sequence[report_runs.RunSummary]) -> str:
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


def _num_classes(runs: Sequence[report_runs.RunSummary]) -> int | None:
  return next((run.num_classes for run in runs if run.num_classes), None)


def markdown_report(runs: Sequence[report_runs.RunSummary]) -> str:
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


def _colors(runs: Sequence[report_runs.RunSummary]) -> dict[str, tuple[float, ...]]:
  """One colour per run along viridis, in table order."""
  cmap = colormaps['viridis']
  count = max(len(runs) - 1, 1)
  return {run.name: cmap(0.9 * i / count) for i, run in enumerate(runs)}


def _label(run: report_runs.RunSummary) -> str:
  label = f'lr {format_lr(run.learning_rate)}'
  if run.status == run_status.CONVERGED:
    return label
  return f'{label} ({run.status.replace("_", " ")})'


def _draw_curves(ax: Axes, runs: Sequence[report_runs.RunSummary], metric: str) -> None:
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


def plot_curves(runs: Sequence[report_runs.RunSummary], out_dir: pathlib.Path) -> None:
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


def plot_accuracy_vs_lr(runs: Sequence[report_runs.RunSummary],
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
              if report_runs.finite_or_none(getattr(run, attribute)) is not None]
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
  runs = report_runs.load_sweep(sweep_dir)
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
