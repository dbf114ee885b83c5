"""The sweep's points as text: the points table, the verdict, points.csv."""

import csv
import pathlib
from collections.abc import Sequence

from lettercnn import formats
from lettercnn.sweep import plots as sweep_plots
from lettercnn.sweep import points as sweep_points

POINTS_CSV_COLUMNS = (
    'point', 'learning_rate', 'batch_size', 'settings', 'runs', 'diverged',
    'seeds', 'final_train_accuracy_mean', 'final_train_accuracy_std',
    'final_train_accuracy_min', 'final_train_accuracy_max',
    'best_val_accuracy_mean', 'best_val_accuracy_std', 'best_val_accuracy_min',
    'best_val_accuracy_max')


def _mean_std(stats: sweep_points.Stats | None) -> str:
  if stats is None:
    return '-'
  if stats.count == 1:
    return formats.percent(stats.mean)
  return f'{100 * stats.mean:.1f} ± {100 * stats.std:.1f}%'


def _range(stats: sweep_points.Stats | None) -> str:
  if stats is None or stats.count == 1:
    return '-'
  return f'{100 * stats.low:.1f}–{100 * stats.high:.1f}%'


def _settings_text(point: sweep_points.Point) -> str:
  return ', '.join(f'{f}={v}' for f, v in point.settings)


def points_table(points: Sequence[sweep_points.Point]) -> str:
  """One row per point: runs, diverged runs, mean ± std and range of both."""
  with_settings = any(p.settings for p in points)
  header = ('| Point | Learning rate | Batch size |'
            + (' Other settings |' if with_settings else '')
            + ' Runs | Diverged | Final train acc (mean ± std) | range '
            '| Best val acc (mean ± std) | range |')
  lines = [header, '|---|---:|---:|' + ('---|' if with_settings else '')
           + '---:|---:|---:|---:|---:|---:|']
  for point in points:
    batch = '-' if point.batch_size is None else str(point.batch_size)
    lines.append(
        f'| {point.name} | {sweep_plots.format_lr(point.learning_rate)} '
        f'| {batch} |'
        + (f' {_settings_text(point)} |' if with_settings else '')
        + f' {len(point.runs)} | {point.num_diverged} '
        f'| {_mean_std(point.final_train_accuracy)} '
        f'| {_range(point.final_train_accuracy)} '
        f'| {_mean_std(point.best_val_accuracy)} '
        f'| {_range(point.best_val_accuracy)} |')
  return '\n'.join(lines)


def _describe(point: sweep_points.Point) -> str:
  stats = point.best_val_accuracy
  runs = f'{len(point.runs)} run' + ('s' if len(point.runs) > 1 else '')
  spread = '' if stats.count == 1 else (
      f' ± {100 * stats.std:.1f}, range {_range(stats)}')
  return (f'{point.name} (mean best validation accuracy '
          f'{formats.percent(stats.mean)}{spread}, {runs})')


def verdict_lines(points: Sequence[sweep_points.Point]) -> list[str]:
  """The best point, whether the runner-up is within its spread, and per seed."""
  ranked = sweep_points.ranked_points(points)
  if not ranked:
    return ['No best point: every point has a diverged run or no validation '
            'accuracy yet.']
  winner = ranked[0]
  lines = [f'Best point: {_describe(winner)}; chosen by '
           f'{sweep_points.BEST_POINT_RULE}.']
  if len(ranked) > 1:
    runner_up, spread = ranked[1], winner.best_val_accuracy
    if spread.count == 1:
      lines.append(f'Runner-up: {_describe(runner_up)}. One run per point: '
                   'the sweep has no spread to compare them with.')
    elif runner_up.best_val_accuracy.mean >= spread.low:
      lines.append(f'Runner-up: {_describe(runner_up)}, within the winner\'s '
                   f'range ({_range(spread)}): the seeds do not separate '
                   'them.')
    else:
      lines.append(f'Runner-up: {_describe(runner_up)}, below the winner\'s '
                   f'range ({_range(spread)}).')
  by_seed = sweep_points.best_by_seed(points)
  if len(by_seed) > 1:
    picks = [f'seed {seed}: {point.name}' for seed, point in
             sorted(by_seed.items(), key=lambda item: str(item[0]))]
    same = len({id(p) for p in by_seed.values()}) == 1
    lines.append('Best run of each seed: ' + '; '.join(picks) + (
        ' (every seed picks the same point).' if same else
        ' (the seeds disagree).'))
  return lines


def batch_size_table(points: Sequence[sweep_points.Point]) -> str:
  """Per batch size: the best rate and the edges of the rates that work."""
  verdicts = sweep_points.by_batch_size(points)
  with_settings = any(v.settings for v in verdicts)
  lines = ['| Batch size |' + (' Other settings |' if with_settings else '')
           + ' Best rate (mean best val acc) | Largest rate every seed '
           'converged at | Smallest rate a seed diverged at |',
           '|---:|' + ('---|' if with_settings else '') + '---|---:|---:|']
  for verdict in verdicts:
    best = '-' if verdict.best is None else (
        f'{sweep_plots.format_lr(verdict.best.learning_rate)} '
        f'({formats.percent(verdict.best.best_val_accuracy.mean)})')
    settings = ', '.join(f'{f}={v}' for f, v in verdict.settings)
    lines.append(
        f'| {"-" if verdict.batch_size is None else verdict.batch_size} |'
        + (f' {settings} |' if with_settings else '')
        + f' {best} | {formats.rate(verdict.largest_converged)} '
        f'| {formats.rate(verdict.smallest_diverged)} |')
  return '\n'.join(lines)


def write_points_csv(points: Sequence[sweep_points.Point],
                     path: pathlib.Path) -> None:
  """points.csv: one row per point, POINTS_CSV_COLUMNS, accuracies as fractions."""

  def stats_cells(stats: sweep_points.Stats | None) -> list[str]:
    if stats is None:
      return [''] * 4
    return [repr(stats.mean), repr(stats.std), repr(stats.low),
            repr(stats.high)]

  with path.open('w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(POINTS_CSV_COLUMNS)
    for point in points:
      writer.writerow([
          point.name,
          '' if point.learning_rate is None else repr(point.learning_rate),
          '' if point.batch_size is None else point.batch_size,
          _settings_text(point), len(point.runs), point.num_diverged,
          ' '.join(str(s) for s in point.seeds),
          *stats_cells(point.final_train_accuracy),
          *stats_cells(point.best_val_accuracy)])
