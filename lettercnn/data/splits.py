"""The two splits every dataset source hands to the input pipeline, and how a
generated dataset divides each class between them.

Imports no TensorFlow at run time, so that config checks can use it before
TensorFlow loads.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from lettercnn import errors

if TYPE_CHECKING:
  import tensorflow as tf

# What the input pipeline may subtract from both splits: nothing, the
# training split's mean image, or its mean pixel (a mean of each channel).
MEAN_SUBTRACTIONS = ('none', 'image', 'pixel')


@dataclasses.dataclass(frozen=True)
class Splits:
  """Train and validation examples of one dataset, before batching.

  Elements of both datasets are dicts {'image': uint8 [H, W, C], 'label': int64},
  at the size the source stores them; the input pipeline resizes them.
  """
  train: tf.data.Dataset
  validation: tf.data.Dataset
  num_train: int
  num_validation: int
  class_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def per_class(examples_per_class: int,
              validation_fraction: float) -> tuple[int, int]:
  """Returns the (training, validation) examples of each class.

  Raises:
    errors.InputError: a split would be empty, e.g. examples_per_class=2 with
      validation_fraction=0.25 holds out round(0.5) = 0 examples.
  """
  num_validation = int(round(examples_per_class * validation_fraction))
  num_train = examples_per_class - num_validation
  if num_train < 1 or num_validation < 1:
    raise errors.InputError(
        f'examples_per_class={examples_per_class} with validation_fraction='
        f'{validation_fraction} gives {num_train} training and '
        f'{num_validation} validation images per class; both need at least '
        '1, so raise examples_per_class or change validation_fraction')
  return num_train, num_validation
