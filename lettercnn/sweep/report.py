"""Summarises a sweep: its points over seeds, the best one, tables and plots.

Usage:
  python -m lettercnn.report SWEEP_DIR

Every subdirectory of SWEEP_DIR that holds a `status.json` and/or TensorBoard
event files is one training run (as `scripts/sweep.sh` lays them out). The
report reads both, so it also works while the sweep is still running. A run
whose status.json does not read (cut short, edited) is named in one warning,
counted in the printed report and summary.md, and kept out of everything
else. It writes into SWEEP_DIR:

  summary.md            the verdict, the points table, the best rate per batch
                        size and the runs table (all printed too; the points
                        and batch size tables only when they add to the runs)
  points.csv            one row per point (runs that differ only by seed)
  summary.csv           one row per run
  train_loss.png        training loss against epoch, one line per run
  train_accuracy.png    training accuracy against epoch, one line per run
  curves.png            the two above side by side
  accuracy_vs_lr.png    final training / best validation accuracy against
                        rate, mean +- std over seeds, one line per batch size
  lr_batch_heatmap.png  mean best validation accuracy, rate x batch size
  best_run_confusion.png
                        the best run's validation confusion matrix (its
                        most confused pairs are in summary.md and printed)
  events.out.tfevents.*.lettercnn_sweep_hparams
                        the swept fields for TensorBoard's HParams dashboard
                        (`tensorboard --logdir SWEEP_DIR`)
"""

import csv
import math
import pathlib
import sys
from collections.abc import Sequence

from absl import logging
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
import numpy as np

from lettercnn import formats
from lettercnn.sweep import hparams as hparams_summary
from lettercnn.sweep import best_confusion as report_confusion
from lettercnn.sweep import range_tests as report_lr_find
from lettercnn.sweep import runs as report_runs
from lettercnn.run import status as run_status
from lettercnn.sweep import plots as sweep_plots
from lettercnn.sweep import points as sweep_points
from lettercnn.sweep import tables as sweep_tables
from lettercnn import errors

CSV_COLUMNS = ('run', 'learning_rate', 'status', 'final_train_loss',
               'final_train_accuracy', 'final_val_loss', 'final_val_accuracy',
               'best_val_accuracy', 'best_val_epoch', 'epochs_run',
               'num_epochs')
# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


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
    best = formats.percent(run.best_val_accuracy)
    if run.best_val_accuracy is not None and run.best_val_epoch is not None:
      best += f' ({run.best_val_epoch:g})'
    lines.append(
        f'| {run.name} | {sweep_plots.format_lr(run.learning_rate)} | {run.status} '
        f'| {_number(run.final_train_loss)} '
        f'| {formats.percent(run.final_train_accuracy)} '
        f'| {formats.percent(run.final_val_accuracy)} | {best} '
        f'| {_epochs(run)} |')
  return '\n'.join(lines)


def _num_classes(runs: Sequence[report_runs.RunSummary]) -> int | None:
  return next((run.num_classes for run in runs if run.num_classes), None)


def unreadable_line(unreadable: Sequence[report_runs.UnreadableRun],
                    named: bool) -> str | None:
  """The count of runs left out as unreadable, and their names if `named`."""
  if not unreadable:
    return None
  names = (f' ({", ".join(run.name for run in unreadable)})' if named
           else ' (named in the warning)')
  several = len(unreadable) > 1
  return (f'Left out: {len(unreadable)} unreadable run{"s" if several else ""}'
          f'{names}, whose {run_status.STATUS_FILE} does not read; '
          f'{"they are" if several else "it is"} in no table, plot, CSV or '
          'verdict.')


def markdown_report(
    runs: Sequence[report_runs.RunSummary],
    points: Sequence[sweep_points.Point],
    unreadable: Sequence[report_runs.UnreadableRun] = ()) -> str:
  """summary.md: the verdict, the points, each batch size, the runs, plots."""
  parts = ['# Sweep', '', *sweep_tables.verdict_lines(points)]
  left_out = unreadable_line(unreadable, named=True)
  if left_out:
    parts += ['', left_out]
  unfinished = [run.name for run in runs if not run.finished]
  if unfinished:
    parts += ['', f'Not finished yet ({", ".join(unfinished)}): their rows are '
              'partial and the verdict may change.']
  num_classes = _num_classes(runs)
  if num_classes:
    parts += ['', f'Chance level: {formats.percent(1 / num_classes)} '
              f'({num_classes} classes).']
  parts += [
      '', '## Points', '',
      'A point is one setting of the swept fields; its runs differ only by '
      'their seed. Standard deviations are over seeds (n - 1 in the '
      'denominator); diverged runs count in "Diverged" and, with the values '
      'they reached, in the accuracies.', '',
      sweep_tables.points_table(points), '',
      '## By batch size', '', sweep_tables.batch_size_table(points), '',
      '## Runs', '', markdown_table(runs), '',
      'Final values: at the end of training, where a run diverged, or the '
      'latest logged for an unfinished run. Epochs: completed / planned when '
      'a run stopped early or is still running.', '',
      '![Training curves](curves.png)', '',
      '![Accuracy against learning rate](accuracy_vs_lr.png)', '',
      '![Learning rate x batch size](lr_batch_heatmap.png)', '']
  return '\n'.join(parts)


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------


def _colors(runs: Sequence[report_runs.RunSummary]) -> dict[str, tuple[float, ...]]:
  """One colour per learning rate along viridis, largest rate first.

  Runs of one rate (its seeds, batch sizes) share the colour and the legend
  entry, so a big sweep's legend stays one line per rate.
  """
  cmap = colormaps['viridis']
  rates = sorted({run.learning_rate for run in runs},
                 key=lambda rate: (rate is None, -(rate or 0.0)))
  count = max(len(rates) - 1, 1)
  color_of_rate = {rate: cmap(0.9 * i / count) for i, rate in enumerate(rates)}
  return {run.name: color_of_rate[run.learning_rate] for run in runs}


def _label(run: report_runs.RunSummary) -> str:
  label = f'lr {sweep_plots.format_lr(run.learning_rate)}'
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
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # One entry per label.
    ax.legend(unique.values(), unique.keys(), fontsize='small')
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


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def write_report(sweep_dir: pathlib.Path) -> str:
  """Writes all report files into `sweep_dir`; returns what main prints.

  Raises:
    errors.InputError: see `report_runs.load_sweep`.
  """
  sweep = report_runs.load_sweep(sweep_dir)
  runs = sweep.runs
  points = sweep_points.group_points(runs)
  write_csv(runs, sweep_dir / 'summary.csv')
  sweep_tables.write_points_csv(points, sweep_dir / 'points.csv')
  confusion_markdown, confusion_printed = report_confusion.section(
      points, sweep_dir)
  range_tests = report_lr_find.section(sweep_dir, runs, points)
  (sweep_dir / 'summary.md').write_text('\n'.join(
      [markdown_report(runs, points, sweep.unreadable), *confusion_markdown,
       *range_tests]))
  plot_curves(runs, sweep_dir)
  sweep_plots.plot_accuracy_vs_lr(points, _num_classes(runs),
                                  sweep_dir / 'accuracy_vs_lr.png')
  sweep_plots.plot_heatmap(points, sweep_dir / 'lr_batch_heatmap.png')
  hparams_summary.write_experiment(sweep_dir, runs)
  logging.info('Wrote the report of %d runs (%d points) into %s.', len(runs),
               len(points), sweep_dir)
  printed = [markdown_table(runs)]
  if any(len(point.runs) > 1 for point in points):
    printed.append(sweep_tables.points_table(points))
  if len({point.batch_size for point in points}) > 1:
    printed.append(sweep_tables.batch_size_table(points))
  left_out = unreadable_line(sweep.unreadable, named=False)
  printed.append('\n'.join(sweep_tables.verdict_lines(points)
                           + ([left_out] if left_out else [])))
  if confusion_printed:
    printed.append('\n'.join(confusion_printed))
  if range_tests:
    printed.append('\n'.join(line for line in range_tests[2:]
                             if not line.startswith('![')).rstrip())
  return '\n\n'.join(printed)


def main(argv: Sequence[str] | None = None) -> int:
  """Command line: `python -m lettercnn.report SWEEP_DIR`; returns the code."""
  args = list(sys.argv[1:] if argv is None else argv)
  if len(args) != 1 or args[0].startswith('-'):
    print('Usage: python -m lettercnn.report SWEEP_DIR', file=sys.stderr)
    return errors.BAD_INPUT
  try:
    print(write_report(pathlib.Path(args[0])))
  except errors.InputError as e:
    print(f'report: {e}', file=sys.stderr)
    return errors.exit_code(e)
  return errors.DONE

