"""A sweep's range tests and curvature bounds, beside the rates the sweep found.

`python -m lettercnn.lr_find --workdir=SWEEP_DIR/lr_find ...` puts a range
test inside a sweep directory; the report reads every `lr_find.json` there
(such a folder is not a training run), and every run whose status.json has
a sharpness at initialisation (`sharpness_every_steps` > 0), and sets their
predictions next to the sweep's best rate and its edges, per batch size.
"""

import json
import math
import pathlib
from typing import Any, Sequence

from matplotlib.figure import Figure

from lettercnn import formats
from lettercnn.lr_find import range_test as lr_range
from lettercnn.sweep import runs as report_runs
from lettercnn.sweep import points as sweep_points


def is_range_test(path: pathlib.Path) -> bool:
  """Whether `path` holds an LR range test's result rather than a run."""
  return (path / lr_range.RESULT_FILE).is_file()


def load(sweep_dir: pathlib.Path) -> list[tuple[str, dict[str, Any]]]:
  """(folder name, lr_find.json) of each range test in `sweep_dir`'s folders."""
  tests = []
  for path in sorted(p for p in sweep_dir.iterdir() if is_range_test(p)):
    with open(path / lr_range.RESULT_FILE) as f:
      tests.append((path.name, json.load(f)))
  return tests


def _rate(rate: float | None) -> str:
  """`formats.rate` to 2 significant digits, as lr_find prints rates."""
  return formats.rate(rate, digits=2)


def _test_line(name: str, found: dict[str, Any]) -> str:
  seeds = len(found['seeds'])
  spread = (f' (max/min over {seeds} seeds: ' + ', '.join(
      f'{found["spread"][k]:.2g}x' for k in lr_range.SUGGESTIONS) + ')'
            if seeds > 1 else '')
  sharp = found['sharpness']
  line = (f'- Range test `{name}`: recommended {_rate(found["recommended"])}; '
          + ', '.join(f'{k} {_rate(v)}' for k, v in found['suggestions'].items())
          + f'{spread}. Curvature bound at initialisation '
          f'{_rate(sharp["bound"])} (lambda_max {sharp["lambda_max"]:.4g} over '
          f'{sharp["examples"]} images, {sharp["formula"]})')
  if sharp.get('batch_bound') is not None:
    line += f', per-example {_rate(sharp["batch_bound"])}'
  # An lr_find.json written by an older lettercnn has no bound per seed.
  over_seeds = found.get('bound_over_seeds')
  if seeds > 1 and over_seeds:
    line += (f'; over the {seeds} seeds\' initialisations median '
             f'{_rate(over_seeds["median"])} ({over_seeds["spread"]:.2g}x)')
  return line + '.'


def _run_bound_line(run: report_runs.RunSummary) -> str | None:
  initial = run.initial_sharpness
  if not initial:
    return None
  return (f'- Run `{run.name}`: sharpness at initialisation '
          f'{initial["lambda_max"]:.4g}, bound {_rate(initial["bound"])} '
          f'({initial["formula"]}).')


SHARPNESS_PLOT = 'sharpness.png'


def plot_sharpness(runs: Sequence[report_runs.RunSummary],
                   path: pathlib.Path) -> bool:
  """Each measured run's sharpness against its limit; False if none measured.

  One panel a run: the sharpness (log axis) and the limit 2(1+mu)/lr (or
  2/lr) it would have to pass for a quadratic to diverge, with the training
  loss on the right axis, so a collapse shows beside the curvature.
  """
  measured = [run for run in runs if run.sharpness is not None]
  if not measured:
    return False
  figure = Figure(figsize=(6.5, 3.2 * len(measured)))
  axes = figure.subplots(len(measured), 1, squeeze=False)[:, 0]
  for ax, run in zip(axes, measured):
    ax.plot(run.sharpness.epochs, run.sharpness.values, 'o-', color='C0',
            ms=3, label='sharpness (lambda_max)')
    if run.sharpness_limit is not None:
      ax.plot(run.sharpness_limit.epochs, run.sharpness_limit.values, '--',
              color='C3', label='limit 2(1+mu)/lr')
    ax.set_yscale('log')
    ax.set_xlabel('epoch')
    ax.set_ylabel('sharpness')
    ax.set_title(run.name)
    if run.train_loss is not None:
      loss_ax = ax.twinx()
      loss_ax.plot(run.train_loss.epochs, run.train_loss.values, color='0.6',
                   lw=0.8, label='training loss')
      loss_ax.set_ylabel('training loss')
      finite = [v for v in run.train_loss.values if math.isfinite(v)]
      if finite:
        loss_ax.set_ylim(0, max(finite) * 1.1)
      loss_ax.legend(loc='lower right', fontsize=7)
    ax.legend(loc='upper left', fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  return True


def section(sweep_dir: pathlib.Path, runs: Sequence[report_runs.RunSummary],
            points: Sequence[sweep_points.Point]) -> list[str]:
  """summary.md's lines on range tests, bounds and sharpness, or [].

  Writes SHARPNESS_PLOT into `sweep_dir` where runs measured sharpness.
  """
  lines = [_test_line(name, found) for name, found in load(sweep_dir)]
  lines += filter(None, map(_run_bound_line, runs))
  plotted = plot_sharpness(runs, sweep_dir / SHARPNESS_PLOT)
  if not lines and not plotted:
    return []
  sweep = ['- The sweep' + (f' at batch size {v.batch_size}'
                            if v.batch_size is not None else '') +
           f': best rate {_rate(v.best.learning_rate if v.best else None)}, '
           'largest rate every seed converged at '
           f'{_rate(v.largest_converged)}, smallest a seed diverged at '
           f'{_rate(v.smallest_diverged)}.'
           for v in sweep_points.by_batch_size(points)]
  return (['## Range test and curvature bound', '', *lines, *sweep, '']
          + ([f'![Sharpness during training]({SHARPNESS_PLOT})', '']
             if plotted else []))
