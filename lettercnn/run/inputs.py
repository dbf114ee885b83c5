"""What a run feeds its model, recorded so that a classifier feeds it the same.

Training writes `record(...)` into status.json, and so into every checkpoint's
metadata, as 'inputs': the class names in label order, where the images came
from (which decides how an image file becomes pixels, see `RunInputs`), and
the SHA-256 of the training split's mean when `config.mean_subtraction`
subtracts one. The mean itself is WORKDIR/input_mean.npy: the float32 values
the batches had subtracted, bit for bit.

Why the mean is stored rather than recomputed: recomputing it needs the whole
training split decoded again (for a folder dataset, the very files, which may
have changed since), while the file is the exact array, written once when
training starts. It is a file rather than JSON because an AlexNet mean image
is 150,000 numbers, which status.json would rewrite every epoch.
"""

import dataclasses
import os
from typing import Any

import ml_collections
import numpy as np

from lettercnn.run import checkpoints as checkpointing
from lettercnn import errors
from lettercnn import files

MEAN_FILE = 'input_mean.npy'
# Where a run's images come from: a folder of image files, imported by
# `folder_dataset` (decoded and squashed with Pillow), or a TFDS dataset,
# whose stored pixels `input_pipeline.preprocess` converts and squashes.
FOLDER = 'folder'
TFDS = 'tfds'


@dataclasses.dataclass(frozen=True)
class RunInputs:
  """How to turn an image file into what the run's model was fed.

  FOLDER runs decode a file as `folder_dataset.decode_image` does; TFDS runs
  take its own pixels (`folder_dataset.decode_stored`). Both then go through
  `input_pipeline.preprocess` with `image_size` and `grayscale`, and have
  `mean` subtracted when it is not None.
  """
  class_names: tuple[str, ...]
  source: str
  image_size: int
  grayscale: bool
  mean: np.ndarray | None


def record(workdir: str, config: ml_collections.ConfigDict,
           class_names: tuple[str, ...], source: str,
           mean: np.ndarray | None) -> dict[str, Any]:
  """Writes the mean file (if any) and returns the record for status.json."""
  if mean is not None:
    _write_atomically(os.path.join(workdir, MEAN_FILE), mean)
  return {'class_names': list(class_names), 'source': source,
          'mean_subtraction': config.mean_subtraction,
          'mean_sha256': None if mean is None else checkpointing.array_digest(
              mean)}


def _write_atomically(path: str, array: np.ndarray) -> None:
  try:
    with files.atomic_path(path) as temp_path, open(temp_path, 'wb') as f:
      np.save(f, array, allow_pickle=False)
  except OSError as e:
    raise errors.InputError(
        f'could not write {path} ({e.strerror or e})') from e


def load(workdir: str, meta: dict[str, Any], where: str) -> RunInputs:
  """The inputs of the run whose status (or checkpoint metadata) is `meta`.

  `where` names what `meta` came from, for the messages.

  Raises:
    errors.InputError: `meta` has no record (the run was trained before
      classify existed), or the mean file is missing or not the one recorded.
  """
  recorded, config = meta.get('inputs'), meta.get('config') or {}
  if not isinstance(recorded, dict):
    raise errors.InputError(
        f'{where} has no record of the run\'s inputs (class names, mean): it '
        'was saved before lettercnn recorded them; train the run again with '
        'this code')
  mean = None
  if recorded.get('mean_sha256') is not None:
    path = os.path.join(workdir, MEAN_FILE)
    try:
      mean = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise errors.InputError(
          f'{path}, the training mean that {where} subtracts '
          f'(mean_subtraction={recorded.get("mean_subtraction")!r}), does not '
          f'read ({e})') from e
    if checkpointing.array_digest(mean) != recorded['mean_sha256']:
      raise errors.InputError(
          f'{path} is not the training mean {where} recorded (its SHA-256 '
          'differs): the file was changed after training')
  return RunInputs(class_names=tuple(recorded['class_names']),
                   source=recorded['source'],
                   image_size=int(config['image_size']),
                   grayscale=bool(config['grayscale']), mean=mean)
