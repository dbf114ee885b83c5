"""The two splits every dataset source hands to the input pipeline."""

import dataclasses

import tensorflow as tf


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
