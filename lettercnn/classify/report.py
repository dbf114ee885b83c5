"""What a classification writes into --out, and the table it prints.

Always: predictions.csv and predictions.json (every image's top-k classes and
probabilities), classify.md. With labelled images (`classify_inputs`), also:
per_class.csv (precision, recall = DIGITS' per-class accuracy),
confusion_matrix.csv and .png (counts and row-normalised), mistakes.png (the
most confident mistakes, each captioned with its true and predicted class and
the probability).
"""

import csv
import dataclasses
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from lettercnn import confusion
from lettercnn import formats
from lettercnn.data import folder_dataset
from lettercnn.classify import trained_model
from lettercnn import errors

# The contact sheet: this many mistakes at most, tiles of this many pixels.
MAX_MISTAKES = 48
_TILE_PIXELS = 64
_MOST_CONFUSED = 10


@dataclasses.dataclass(frozen=True)
class Prediction:
  """One image's top-k classes, most probable first."""
  path: str
  true_class: str | None
  classes: tuple[str, ...]
  probabilities: tuple[float, ...]

  @property
  def correct(self) -> bool | None:
    return None if self.true_class is None else (
        self.classes[0] == self.true_class)


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds spent, and on how many images.

  `startup_s`: from the command's start to its first image (imports aside):
  the checkpoint read, the model compiled. `decode_s`: files read and
  decoded; `preprocess_s`: decoded pixels to the model's input; `model_s`:
  the batches through the model and the top-k back on the host.
  """
  images: int
  startup_s: float
  list_s: float
  decode_s: float
  preprocess_s: float
  model_s: float

  @property
  def end_to_end_s(self) -> float:
    """Listing the files to the last prediction."""
    return self.list_s + self.decode_s + self.preprocess_s + self.model_s

  def rate(self, seconds: float) -> float:
    return self.images / seconds if seconds > 0 else float('inf')

  def describe(self) -> str:
    return (f'{self.images} images in {self.end_to_end_s:.2f} s end to end, '
            f'{self.rate(self.end_to_end_s):,.0f} images/s (listing '
            f'{self.list_s:.2f} s, decoding {self.decode_s:.2f} s, '
            f'preprocessing {self.preprocess_s:.2f} s, model '
            f'{self.model_s:.2f} s: {self.rate(self.model_s):,.0f} images/s '
            f'once decoded); start-up {self.startup_s:.1f} s (checkpoint, '
            'compilation)')


@dataclasses.dataclass(frozen=True)
class Classification:
  """A classify command's results."""
  trained: trained_model.TrainedModel
  paths: tuple[str, ...]
  top_k: int
  predictions: tuple[Prediction, ...]
  skipped: tuple[str, ...]
  timing: Timing

  @property
  def labelled(self) -> list[Prediction]:
    return [p for p in self.predictions if p.true_class is not None]

  def counts(self) -> np.ndarray | None:
    """The labelled images' confusion matrix, None without any."""
    labelled = self.labelled
    if not labelled:
      return None
    index = {name: i for i, name in enumerate(self.trained.class_names)}
    return confusion.matrix([index[p.true_class] for p in labelled],
                            [index[p.classes[0]] for p in labelled],
                            len(index))

  def top_k_accuracy(self) -> float | None:
    labelled = self.labelled
    return (sum(p.true_class in p.classes for p in labelled) / len(labelled)
            if labelled else None)

  def mistakes(self) -> list[Prediction]:
    """Wrong top-1 predictions, the most confident first."""
    wrong = [p for p in self.labelled if not p.correct]
    return sorted(wrong, key=lambda p: -p.probabilities[0])


def _display_path(path: str) -> str:
  relative = os.path.relpath(path)
  return path if relative.startswith('..') else relative


def metrics(result: Classification) -> dict[str, Any] | None:
  """Accuracies, per-class metrics and the most confused pairs, as JSON."""
  counts = result.counts()
  if counts is None:
    return None
  names = result.trained.class_names
  return {
      'images': len(result.labelled),
      'top_1_accuracy': confusion.accuracy(counts),
      f'top_{result.top_k}_accuracy': result.top_k_accuracy(),
      'per_class': [dict(dataclasses.asdict(m), precision=m.precision,
                         recall=m.recall, accuracy=m.accuracy)
                    for m in confusion.per_class(counts, names)],
      'most_confused': [dataclasses.asdict(c) for c in
                        confusion.most_confused(counts, names,
                                                _MOST_CONFUSED)],
      'confusion_matrix': counts.tolist(),
  }


def _write_predictions(result: Classification, out: pathlib.Path) -> None:
  with (out / 'predictions.csv').open('w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['path', 'true_class', 'correct'] + [
        f'{column}_{rank}' for rank in range(1, result.top_k + 1)
        for column in ('class', 'probability')])
    for p in result.predictions:
      ranked = [cell for pair in zip(p.classes, p.probabilities)
                for cell in (pair[0], repr(pair[1]))]
      writer.writerow([p.path, p.true_class or '',
                       '' if p.correct is None else int(p.correct)] + ranked)
  trained = result.trained
  (out / 'predictions.json').write_text(json.dumps({
      'workdir': os.path.abspath(trained.workdir),
      'checkpoint': {'asked': trained.checkpoint, 'step': trained.step,
                     'epoch': trained.epoch},
      'class_names': list(trained.class_names),
      'top_k': result.top_k,
      'paths': list(result.paths),
      'images': [dataclasses.asdict(p) for p in result.predictions],
      'skipped_unreadable': list(result.skipped),
      'metrics': metrics(result),
      'timing': dict(dataclasses.asdict(result.timing),
                     end_to_end_s=result.timing.end_to_end_s),
  }, indent=1))


def _write_per_class(per_class: Sequence[confusion.ClassMetrics],
                     out: pathlib.Path) -> None:
  with (out / 'per_class.csv').open('w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['class', 'images', 'correct', 'predicted', 'precision',
                     'recall', 'accuracy'])
    for m in per_class:
      writer.writerow([m.name, m.images, m.correct, m.predicted] + [
          '' if v is None else repr(v)
          for v in (m.precision, m.recall, m.accuracy)])


def _write_confusion_csv(counts: np.ndarray, names: Sequence[str],
                         out: pathlib.Path) -> None:
  with (out / 'confusion_matrix.csv').open('w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['true \\ predicted', *names])
    for name, row in zip(names, counts):
      writer.writerow([name, *row.tolist()])


def _write_mistakes_sheet(result: Classification, out: pathlib.Path) -> None:
  mistakes = result.mistakes()[:MAX_MISTAKES]
  tiles = [folder_dataset.decode_image(p.path, _TILE_PIXELS, grayscale=False)
           for p in mistakes]
  captions = [f'{os.path.basename(p.path)[:16]}\ntrue {p.true_class}, '
              f'pred {p.classes[0]}\np = {p.probabilities[0]:.3f}'
              for p in mistakes]
  confusion.contact_sheet(
      tiles, captions, out / 'mistakes.png',
      f'The {len(mistakes)} most confident of {len(result.mistakes())} '
      f'mistakes ({result.trained.describe()})')


def _markdown(result: Classification) -> str:
  trained, timing = result.trained, result.timing
  lines = [f'# Classified with {trained.workdir}', '',
           f'Model: {trained.meta["config"]["model"]}, {trained.describe()}. '
           f'Images: {len(result.predictions)} from '
           f'{", ".join(result.paths)}, {len(result.labelled)} of them '
           f'labelled; {len(result.skipped)} unreadable ones skipped.', '',
           f'Speed: {timing.describe()}.', '']
  counts = result.counts()
  if counts is None:
    return '\n'.join(lines + ['No labelled images, so no accuracy.', ''])
  names = trained.class_names
  correct = int(np.trace(counts))
  lines += [f'Top-1 accuracy: {formats.percent(confusion.accuracy(counts))} '
            f'({correct} of {len(result.labelled)}); top-{result.top_k} '
            f'accuracy: {formats.percent(result.top_k_accuracy())}.', '',
            '## Most confused', '']
  lines += confusion.pairs_table(
      confusion.most_confused(counts, names, _MOST_CONFUSED))
  lines += ['', '## Per class', '',
            'Accuracy is DIGITS\' per-class accuracy: the recall.', '',
            '| class | images | correct | precision | recall (accuracy) |',
            '|---|---:|---:|---:|---:|']
  lines += [f'| {m.name} | {m.images} | {m.correct} | '
            f'{formats.percent(m.precision)} | {formats.percent(m.recall)} |'
            for m in confusion.per_class(counts, names)]
  lines += ['', '## Confusion matrix', '',
            '![Confusion matrix](confusion_matrix.png)', '',
            '## The most confident mistakes', '',
            '![The most confident mistakes](mistakes.png)', '']
  return '\n'.join(lines)


def write(result: Classification, out: pathlib.Path) -> None:
  """Writes every file of the module docstring into `out` (which exists)."""
  _write_predictions(result, out)
  counts = result.counts()
  if counts is not None:
    names = result.trained.class_names
    _write_per_class(confusion.per_class(counts, names), out)
    _write_confusion_csv(counts, names, out)
    confusion.save_png(confusion.confusion_figure(
        counts, names, f'{len(result.labelled)} images, '
        f'{result.trained.describe()}'), out / 'confusion_matrix.png')
    _write_mistakes_sheet(result, out)
  (out / 'classify.md').write_text(_markdown(result))


def printed(result: Classification, max_rows: int) -> str:
  """The top-k table (at most `max_rows` rows; 0: all) and the summary."""
  rows = result.predictions if max_rows == 0 else (
      result.predictions[:max_rows])
  paths = [_display_path(p.path) for p in rows]
  width = max([len('image'), *map(len, paths)])
  labelled = bool(result.labelled)
  header = f'{"image":<{width}}' + ('  true' if labelled else '') + ''.join(
      f'  {f"top {rank}":<12}' for rank in range(1, result.top_k + 1))
  lines = [header]
  for path, p in zip(paths, rows):
    truth = f'  {(p.true_class or "-"):<4}' if labelled else ''
    lines.append(f'{path:<{width}}{truth}' + ''.join(
        f'  {f"{c} {q:.3f}":<12}' for c, q in zip(p.classes, p.probabilities)))
  if len(rows) < len(result.predictions):
    lines.append(f'... {len(result.predictions) - len(rows)} more in '
                 'predictions.csv (--max_rows=0 prints all)')
  counts = result.counts()
  if result.skipped:
    lines.append(f'Skipped {len(result.skipped)} unreadable image(s), e.g. '
                 f'{result.skipped[0]}.')
  if counts is not None:
    lines.append(
        f'Top-1 accuracy {formats.percent(confusion.accuracy(counts))}, top-'
        f'{result.top_k} {formats.percent(result.top_k_accuracy())} on '
        f'{len(result.labelled)} labelled images; most confused: ' + (
            '; '.join(c.describe() for c in confusion.most_confused(
                counts, result.trained.class_names)) or 'nothing'))
  lines.append(f'Speed: {result.timing.describe()}')
  return '\n'.join(lines)


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return path == folder or path.startswith(folder + os.sep)


def check_fresh(out: str, workdir: str) -> None:
  """Raises InputError unless `out` is outside `workdir` and new or empty."""
  if _inside(out, workdir):
    raise errors.InputError(
        f'--out {out} is inside the workdir {workdir}, which is only read; '
        'choose a folder outside it')
  if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
    raise errors.InputError(
        f'--out {out} exists and is not an empty folder; give a new one')
