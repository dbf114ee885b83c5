"""Tests of the `tombstone_letters` TFDS builder: seeded, balanced, cached."""

import collections
import hashlib
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import default
from lettercnn.data import input_pipeline
from lettercnn.data import letter_render
from lettercnn.data import tombstone_letters

NUM_CLASSES = len(letter_render.LETTERS)
SIZE = letter_render.STORED_SIZE


def _build(data_dir: str, examples_per_class: int = 8,
           validation_fraction: float = 0.25,
           seed: int = 0) -> tfds.core.DatasetBuilder:
  """Returns the builder of these values, its data built into `data_dir`."""
  builder = tombstone_letters.TombstoneLetters(
      config=tombstone_letters.config_for(examples_per_class,
                                          validation_fraction, seed),
      data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder


def _read(builder: tfds.core.DatasetBuilder,
          split: str) -> tuple[np.ndarray, np.ndarray]:
  """All images and labels of `split`, in stored order."""
  examples = list(
      builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())
  return (np.stack([e['image'] for e in examples]),
          np.array([e['label'] for e in examples]))


def _digests(images: np.ndarray) -> list[str]:
  return [hashlib.sha256(image.tobytes()).hexdigest() for image in images]


class _RenderCalled(Exception):
  """A letter was rendered where the cached dataset should have been read."""


def _no_rendering(*unused_args):
  raise _RenderCalled()


def test_same_config_builds_identical_data_and_another_seed_differs(
    data_dir, tmp_path):
  first = _build(data_dir)
  second = _build(tmp_path / 'elsewhere')
  other_seed = _build(data_dir, seed=1)

  assert first.data_dir != second.data_dir
  for split in ('train', 'validation'):
    images, labels = _read(first, split)
    again_images, again_labels = _read(second, split)
    np.testing.assert_array_equal(again_images, images)
    np.testing.assert_array_equal(again_labels, labels)
    # Same keys, so the same stored order of classes, but new images.
    other_images, other_labels = _read(other_seed, split)
    np.testing.assert_array_equal(other_labels, labels)
    assert not set(_digests(other_images)) & set(_digests(images))


def test_splits_are_balanced_per_class(data_dir):
  builder = _build(data_dir)

  for split, per_class in (('train', 6), ('validation', 2)):
    _, labels = _read(builder, split)
    assert builder.info.splits[split].num_examples == NUM_CLASSES * per_class
    assert len(labels) == NUM_CLASSES * per_class
    assert collections.Counter(labels.tolist()) == {
        label: per_class for label in range(NUM_CLASSES)}
  assert builder.info.features['label'].names == list(letter_render.LETTERS)


def test_default_config_holds_out_a_quarter_of_each_class():
  config = default.get_config()
  builder_config = tombstone_letters.config_for(
      config.examples_per_class, config.validation_fraction,
      config.dataset_seed)

  num_validation = builder_config.num_validation_per_class
  num_train = builder_config.examples_per_class - num_validation
  assert (num_train, num_validation) == (525, 175)
  assert (NUM_CLASSES * num_train, NUM_CLASSES * num_validation) == (5250, 1750)
  assert builder_config.name == 'n700_val0.25_seed0'


def test_train_and_validation_hold_different_images(data_dir):
  builder = _build(data_dir)

  train = _digests(_read(builder, 'train')[0])
  validation = _digests(_read(builder, 'validation')[0])

  assert len(set(train)) == len(train)
  assert len(set(validation)) == len(validation)
  assert not set(train) & set(validation)


def test_dataset_is_versioned_and_built_once(data_dir, tmp_path, monkeypatch):
  builder = _build(data_dir)
  images, labels = _read(builder, 'train')

  assert builder.VERSION == tfds.core.Version('1.0.0')
  assert builder.info.version == builder.VERSION
  assert str(builder.data_dir).endswith(
      os.path.join('tombstone_letters', 'n8_val0.25_seed0',
                   str(builder.VERSION)))

  monkeypatch.setattr(letter_render, 'render_letter', _no_rendering)
  cached = _build(data_dir)
  cached_images, cached_labels = _read(cached, 'train')
  np.testing.assert_array_equal(cached_images, images)
  np.testing.assert_array_equal(cached_labels, labels)
  # The patch is live: a dataset not built yet must render, and fails.
  with pytest.raises(_RenderCalled):
    _build(tmp_path / 'fresh', examples_per_class=2, validation_fraction=0.5)


def test_stored_images_are_64x64_rgb_uint8(data_dir):
  builder = _build(data_dir)

  assert builder.info.features['image'].shape == (SIZE, SIZE, 3)
  images, _ = _read(builder, 'validation')
  assert images.shape[1:] == (SIZE, SIZE, 3)
  assert images.dtype == np.uint8


@pytest.mark.parametrize('image_size, grayscale, channels',
                         [(28, True, 1), (32, False, 3)])
def test_pipeline_resizes_to_image_size(tiny_config, image_size, grayscale,
                                        channels):
  tiny_config.image_size = image_size
  tiny_config.grayscale = grayscale
  tiny_config.batch_size = 4

  pipeline = input_pipeline.Pipeline(tiny_config, num_devices=1)

  batch = next(pipeline.train_batches(epoch=0))
  assert batch['image'].shape == (1, 4, image_size, image_size, channels)
  assert batch['image'].dtype == np.float32
  validation = next(pipeline.validation_batches(batch_size=20))['image']
  assert validation.shape == (20, image_size, image_size, channels)
  # Resizing sums float weights, so 0..255 holds up to rounding.
  assert validation.min() > -1e-3 and validation.max() < 255 + 1e-3
  # Squashing the whole frame keeps each image's mean brightness.
  stored, _ = _read(_build(tiny_config.data_dir), 'validation')
  stored_means = stored.reshape(20, -1, 3).mean(axis=1)
  if grayscale:
    stored_means = stored_means @ [0.2989, 0.587, 0.114]
  resized_means = validation.reshape(20, -1, channels).mean(axis=1)
  np.testing.assert_allclose(resized_means.squeeze(), stored_means, atol=1.0)
