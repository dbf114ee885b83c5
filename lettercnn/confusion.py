"""Confusion matrices and what they say (per-class metrics, most confused
pairs), and their pictures (matplotlib's object API on the Agg canvas, no
pyplot state, so they can be drawn from training and from any thread).

A matrix counts images by (true class, predicted class): rows are true
classes, columns predicted ones, both in the model's class order, so that
matrices of one model always line up, whichever classes a folder holds.

Per-class accuracy is DIGITS': the share of a class's images classified as
that class, which is the class's recall. A class with no images has none,
and one that nothing was predicted as has no precision (None, not 0).
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pathlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lettercnn import formats


def matrix(true_labels: Sequence[int] | np.ndarray,
           predicted_labels: Sequence[int] | np.ndarray,
           num_classes: int) -> np.ndarray:
  """Counts (true, predicted) pairs: int64 [num_classes, num_classes]."""
  true_labels = np.asarray(true_labels, np.int64)
  predicted_labels = np.asarray(predicted_labels, np.int64)
  if true_labels.shape != predicted_labels.shape:
    raise ValueError(f'{true_labels.shape} true labels but '
                     f'{predicted_labels.shape} predicted ones')
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (true_labels, predicted_labels), 1)
  return counts


def row_normalised(counts: np.ndarray) -> np.ndarray:
  """Each row as shares of its class's images; NaN for a class with none."""
  totals = counts.sum(axis=1, keepdims=True).astype(np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(totals > 0, counts / totals, np.nan)


def _ratio(numerator: int, denominator: int) -> float | None:
  return numerator / denominator if denominator else None


@dataclasses.dataclass(frozen=True)
class ClassMetrics:
  """One class of a matrix: its images, and how they were classified."""
  name: str
  images: int  # Images of this class (its row's sum).
  correct: int  # Of them, classified as it.
  predicted: int  # Images of any class classified as it (its column's sum).

  @property
  def precision(self) -> float | None:
    return _ratio(self.correct, self.predicted)

  @property
  def recall(self) -> float | None:
    return _ratio(self.correct, self.images)

  @property
  def accuracy(self) -> float | None:
    """DIGITS' per-class accuracy: the recall."""
    return self.recall


def per_class(counts: np.ndarray,
              class_names: Sequence[str]) -> list[ClassMetrics]:
  """Each class's metrics, in class order."""
  return [ClassMetrics(name=name, images=int(counts[i].sum()),
                       correct=int(counts[i, i]),
                       predicted=int(counts[:, i].sum()))
          for i, name in enumerate(class_names)]


def accuracy(counts: np.ndarray) -> float | None:
  """The share of all images on the diagonal (None for an empty matrix)."""
  return _ratio(int(np.trace(counts)), int(counts.sum()))


@dataclasses.dataclass(frozen=True)
class Confusion:
  """Images of one class classified as another."""
  true_class: str
  predicted_class: str
  count: int
  share: float  # Of the true class's images.

  def describe(self) -> str:
    """'C as O: 12 (6.9% of C)'."""
    return (f'{self.true_class} as {self.predicted_class}: {self.count} '
            f'({formats.percent(self.share)} of {self.true_class})')


def most_confused(counts: np.ndarray, class_names: Sequence[str],
                  limit: int = 5) -> list[Confusion]:
  """The `limit` largest off-diagonal counts, largest first.

  Each direction is its own pair (C as O is not O as C). Ties go to the
  larger share of the true class, then to class order.
  """
  shares = row_normalised(counts)
  pairs = [(int(counts[t, p]), float(shares[t, p]), -t, -p)
           for t in range(len(class_names)) for p in range(len(class_names))
           if t != p and counts[t, p] > 0]
  pairs.sort(reverse=True)
  return [Confusion(class_names[-t], class_names[-p], count, share)
          for count, share, t, p in pairs[:limit]]


def pairs_table(pairs: Sequence[Confusion]) -> list[str]:
  """Markdown table lines of `most_confused`'s pairs."""
  return ['| true class | predicted as | images | share of the true class |',
          '|---|---|---:|---:|'] + [
              f'| {c.true_class} | {c.predicted_class} | {c.count} | '
              f'{formats.percent(c.share)} |' for c in pairs]


def record(counts: np.ndarray, class_names: Sequence[str],
           step: int) -> dict[str, Any]:
  """The matrix as JSON for status.json, with per-class accuracy."""
  return {
      'step': step,
      'class_names': list(class_names),
      'matrix': counts.tolist(),
      'accuracy': accuracy(counts),
      'per_class_accuracy': [m.accuracy for m in per_class(counts,
                                                           class_names)],
  }


def from_record(saved: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
  """(counts, class names) of a `record`.

  Raises:
    ValueError: it is not a square matrix with one row per class.
  """
  names = [str(name) for name in saved['class_names']]
  counts = np.asarray(saved['matrix'], np.int64)
  if counts.shape != (len(names), len(names)):
    raise ValueError(f'a {counts.shape} matrix for {len(names)} classes')
  return counts, names


# Above this many classes the cells are too small to print their values in.
_MAX_ANNOTATED_CLASSES = 30


def _draw_matrix(ax: Axes, values: np.ndarray, class_names: Sequence[str],
                 title: str, cell_text: Sequence[Sequence[str]]) -> None:
  image = ax.imshow(values, cmap='Blues', vmin=0,
                    vmax=max(float(np.nanmax(values, initial=0)), 1e-9))
  ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  ticks = np.arange(len(class_names))
  ax.set_xticks(ticks, class_names, rotation=90 if len(class_names) > 12 else 0)
  ax.set_yticks(ticks, class_names)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  if len(class_names) > _MAX_ANNOTATED_CLASSES:
    return
  threshold = 0.6 * np.nanmax(values, initial=0)
  for t in range(len(class_names)):
    for p in range(len(class_names)):
      if cell_text[t][p]:
        ax.text(p, t, cell_text[t][p], ha='center', va='center',
                fontsize='small',
                color='white' if values[t, p] > threshold else 'black')


def confusion_figure(counts: np.ndarray, class_names: Sequence[str],
                     title: str = '') -> Figure:
  """Counts and row-normalised shares side by side (rows: true classes)."""
  side = 3.0 + 0.45 * len(class_names)
  fig = Figure(figsize=(2 * side + 1.0, side + 0.6))
  FigureCanvasAgg(fig)
  counts_ax, shares_ax = fig.subplots(1, 2)
  shares = row_normalised(counts)
  _draw_matrix(counts_ax, counts, class_names, 'images',
               [[str(c) if c else '' for c in row] for row in counts])
  _draw_matrix(shares_ax, 100 * shares, class_names,
               '% of the true class (row-normalised)',
               [['' if not np.isfinite(s) or s == 0 else f'{100 * s:.0f}'
                 for s in row] for row in shares])
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return fig


def save_png(fig: Figure, path: pathlib.Path) -> None:
  fig.savefig(path, dpi=100)


def as_image(fig: Figure) -> np.ndarray:
  """The figure's pixels, uint8 [H, W, 3], e.g. for a TensorBoard image."""
  fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def contact_sheet(tiles: Sequence[np.ndarray], captions: Sequence[str],
                  path: pathlib.Path, title: str, columns: int = 8) -> None:
  """Writes `tiles` (uint8 [H, W, 1 or 3]) in a grid, each over its caption."""
  rows = max(1, -(-len(tiles) // columns))
  fig = Figure(figsize=(1.5 * columns, 1.75 * rows + 0.5))
  FigureCanvasAgg(fig)
  axes = np.asarray(fig.subplots(rows, columns, squeeze=False)).ravel()
  for ax in axes:
    ax.set_axis_off()
  for ax, tile, caption in zip(axes, tiles, captions):
    ax.imshow(tile[..., 0] if tile.shape[-1] == 1 else tile, cmap='gray',
              vmin=0, vmax=255, interpolation='nearest')
    ax.set_title(caption, fontsize=7)
  if not tiles:
    axes[0].text(0.5, 0.5, 'no mistakes', ha='center', va='center',
                 transform=axes[0].transAxes)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
