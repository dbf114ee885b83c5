"""The sweep's two point plots: accuracy against rate with error bars, and the
learning rate x batch size heatmap of mean best validation accuracy."""

import pathlib
from collections.abc import Sequence

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
import numpy as np

from lettercnn import formats
from lettercnn.sweep import points as sweep_points


def format_lr(learning_rate: float | None) -> str:
  """A run's rate as the sweep's plots and tables label it: `formats.rate`,
  '?' when unknown (0.0001 -> '1e-4')."""
  return formats.rate(learning_rate, missing='?')


def series_label(batch_size: int | None,
                 settings: tuple[tuple[str, object], ...]) -> str:
  """'batch 8', with the point's other swept settings after it."""
  parts = [f'batch {batch_size if batch_size is not None else "?"}']
  parts += [f'{field}={value}' for field, value in settings]
  return ', '.join(parts)


def _series(points: Sequence[sweep_points.Point]):
  """Points with a positive rate, by (batch size, settings), rate ascending."""
  series: dict = {}
  for point in points:
    if point.learning_rate is not None and point.learning_rate > 0:
      series.setdefault((point.batch_size, point.settings), []).append(point)
  return {key: sorted(members, key=lambda p: p.learning_rate)
          for key, members in series.items()}


def _draw_errorbars(ax: Axes, points: Sequence[sweep_points.Point],
                    metric: str, num_classes: int | None) -> None:
  """Mean +- std of `metric` against rate, one line per series.

  A point every run of which diverged is a red cross at 0; one where only
  some seeds diverged is drawn hollow from the others, with 'k/n div'.
  """
  cmap = colormaps['viridis']
  all_series = _series(points)
  for i, ((batch_size, settings), members) in enumerate(all_series.items()):
    color = cmap(0.85 * i / max(len(all_series) - 1, 1))
    shown = [(p, getattr(p, metric)) for p in members
             if not p.all_diverged and getattr(p, metric) is not None]
    if shown:
      ax.errorbar([p.learning_rate for p, _ in shown],
                  [100 * s.mean for _, s in shown],
                  yerr=[100 * s.std for _, s in shown], color=color,
                  marker='o', capsize=3,
                  label=series_label(batch_size, settings))
    for point, stats in shown:
      if point.num_diverged:
        ax.plot(point.learning_rate, 100 * stats.mean, 'o', color='white',
                markeredgecolor=color, markersize=8)
        ax.annotate(f'{point.num_diverged}/{len(point.runs)} div',
                    (point.learning_rate, 100 * stats.mean),
                    textcoords='offset points', xytext=(0, 8), ha='center',
                    color='red', fontsize='x-small')
    diverged = [p.learning_rate for p in members if p.all_diverged]
    if diverged:
      ax.plot(diverged, [0] * len(diverged), 'x', color='red',
              markersize=9, markeredgewidth=2)
  if any(p.all_diverged for p in points):
    ax.plot([], [], 'x', color='red', markeredgewidth=2,
            label='diverged (every seed)')
  if num_classes:
    ax.axhline(100 / num_classes, color='gray', linestyle='--',
               label=f'chance (1/{num_classes})')
  if all_series:
    ax.set_xscale('log')
  else:
    ax.text(0.5, 0.5, 'no learning rates known yet', ha='center',
            va='center', transform=ax.transAxes)
  ax.set_ylim(-5, 105)
  ax.set_xlabel('base learning rate (log scale)')
  ax.set_ylabel('accuracy (%), mean +- std over seeds')
  ax.set_title('Final training accuracy' if metric == 'final_train_accuracy'
               else 'Best validation accuracy')
  ax.grid(True, which='both', alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize='small')


def plot_accuracy_vs_lr(points: Sequence[sweep_points.Point],
                        num_classes: int | None, path: pathlib.Path) -> None:
  """Final training and best validation accuracy against rate, error bars."""
  fig = Figure(figsize=(12.8, 4.8))
  train_ax, val_ax = fig.subplots(1, 2)
  _draw_errorbars(train_ax, points, 'final_train_accuracy', num_classes)
  _draw_errorbars(val_ax, points, 'best_val_accuracy', num_classes)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def _draw_heatmap(ax: Axes, points: Sequence[sweep_points.Point]) -> None:
  """Mean best validation accuracy, batch sizes as rows, rates as columns."""
  rates = sorted({p.learning_rate for p in points})
  batch_sizes = sorted({p.batch_size for p in points},
                       key=lambda b: (b is None, b or 0))
  cell = {(p.batch_size, p.learning_rate): p for p in points}
  values = np.full((len(batch_sizes), len(rates)), np.nan)
  for (row, batch_size) in enumerate(batch_sizes):
    for (col, rate) in enumerate(rates):
      point = cell.get((batch_size, rate))
      if point is None:
        continue
      stats = point.best_val_accuracy
      if point.all_diverged:
        ax.text(col, row, 'diverged', ha='center', va='center',
                color='red', fontsize='small', fontweight='bold')
        continue
      if stats is not None:
        values[row, col] = 100 * stats.mean
      text = '-' if stats is None else f'{100 * stats.mean:.1f}'
      if stats is not None and stats.count > 1:
        text += f'\n±{100 * stats.std:.1f}'
      if point.num_diverged:
        text += f'\n{point.num_diverged}/{len(point.runs)} div'
      ax.text(col, row, text, ha='center', va='center', fontsize='small',
              color='white' if np.isnan(values[row, col])
              or values[row, col] < 60 else 'black')
  image = ax.imshow(np.ma.masked_invalid(values), cmap='viridis', vmin=0,
                    vmax=100, aspect='auto')
  ax.set_facecolor('0.85')
  ax.set_xticks(range(len(rates)), [format_lr(r) for r in rates])
  ax.set_yticks(range(len(batch_sizes)), [str(b) for b in batch_sizes])
  ax.set_xlabel('base learning rate')
  ax.set_ylabel('batch size')
  ax.figure.colorbar(image, ax=ax, label='mean best validation accuracy (%)')


def plot_heatmap(points: Sequence[sweep_points.Point],
                 path: pathlib.Path) -> None:
  """lr_batch_heatmap.png: one panel per setting of the other swept fields."""
  panels: dict = {}
  for point in points:
    if point.learning_rate is not None:
      panels.setdefault(point.settings, []).append(point)
  fig = Figure(figsize=(max(6.4, 1.1 * len({p.learning_rate for p in points})
                            + 2.5), 4.2 * max(len(panels), 1)))
  axes = fig.subplots(max(len(panels), 1), 1, squeeze=False)[:, 0]
  for ax, (settings, members) in zip(axes, panels.items()):
    _draw_heatmap(ax, members)
    title = 'Mean best validation accuracy over seeds'
    if settings:
      title += ' (' + ', '.join(f'{f}={v}' for f, v in settings) + ')'
    ax.set_title(title)
  if not panels:
    axes[0].text(0.5, 0.5, 'no learning rates known yet', ha='center',
                 va='center', transform=axes[0].transAxes)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
