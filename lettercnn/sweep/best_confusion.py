"""The sweep report's section on its best run's confusions.

The best run is the run of the best point (`sweep_points.ranked_points`) with
the highest best validation accuracy that has a confusion matrix, which
training records at its end (status.json's 'val_confusion', of the final
parameters on the validation split).
"""

import pathlib
from collections.abc import Sequence

from absl import logging

from lettercnn import confusion
from lettercnn import formats
from lettercnn.sweep import runs as report_runs
from lettercnn.sweep import points as sweep_points

PLOT = 'best_run_confusion.png'
_PAIRS = 5


def best_run(points: Sequence[sweep_points.Point]
             ) -> report_runs.RunSummary | None:
  """The best point's run with a confusion matrix that validated best."""
  ranked = sweep_points.ranked_points(points)
  runs = [run for run in (ranked[0].runs if ranked else ())
          if run.val_confusion is not None]
  return max(runs, key=lambda run: (run.best_val_accuracy or 0.0, run.name),
             default=None)


def section(points: Sequence[sweep_points.Point],
            out_dir: pathlib.Path) -> tuple[list[str], list[str]]:
  """(summary.md lines, printed lines) on the best run; writes its plot.

  Both are empty when the best point's runs have no confusion matrix (they
  are unfinished, or were trained before training recorded one).
  """
  (out_dir / PLOT).unlink(missing_ok=True)  # An earlier report's.
  run = best_run(points)
  if run is None:
    return [], []
  try:
    counts, names = confusion.from_record(run.val_confusion)
  except (KeyError, TypeError, ValueError) as e:
    logging.warning('Ignoring the confusion matrix of %s: %s', run.name, e)
    return [], []
  step = run.val_confusion.get('step')
  confusion.save_png(confusion.confusion_figure(
      counts, names, f'{run.name}: validation split at step {step}'),
                           out_dir / PLOT)
  pairs = confusion.most_confused(counts, names, _PAIRS)
  per_class = ', '.join(
      f'{m.name} {formats.percent(m.accuracy)}'
      for m in confusion.per_class(counts, names))
  accuracy = confusion.accuracy(counts)
  heading = (f'{run.name}, its final parameters (step {step}) on the '
             f'validation split, accuracy {formats.percent(accuracy or 0)}')
  markdown = ['## The best run\'s confusions', '', f'{heading}.', '',
              *confusion.pairs_table(pairs), '',
              f'Per-class accuracy: {per_class}.', '',
              f'![Confusion matrix of {run.name}]({PLOT})', '']
  printed = [f'Best run: {heading}. Most confused: ' + (
      '; '.join(p.describe() for p in pairs) or 'nothing') + '.',
             f'Per-class accuracy: {per_class}.']
  return markdown, printed
