"""Pictures of a classifier's results: confusion matrices, a mistakes sheet.

Drawn with matplotlib's object API on the Agg canvas (no pyplot state), so
they can be made from training and from any thread.
"""

import pathlib
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from lettercnn import confusion

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
  shares = confusion.row_normalised(counts)
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
