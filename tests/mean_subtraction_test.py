"""Tests of DIGITS' mean subtraction: the training split's mean, from the cache."""

import logging

import ml_collections
import numpy as np
import pytest

from lettercnn import errors
from lettercnn.data import input_pipeline

NUM_DEVICES = 2
# tiny_config: 6 training and 2 validation images of each of 10 letters.
NUM_TRAIN = 60
NUM_VALIDATION = 20
# Divides NUM_TRAIN, so that each epoch's batches hold the whole split.
BATCH_SIZE = 4
# float32 subtraction of values up to 255 against numpy's float64 one.
ATOL = 1e-4


def _pipeline(config: ml_collections.ConfigDict,
              mode: str) -> input_pipeline.Pipeline:
  config = config.copy_and_resolve_references()
  config.mean_subtraction = mode
  config.batch_size = BATCH_SIZE
  return input_pipeline.Pipeline(config, NUM_DEVICES)


def _train_images(pipeline: input_pipeline.Pipeline, epoch: int,
                  start_step: int = 0) -> np.ndarray:
  """The images of the epoch's training batches in order, (N, H, W, C)."""
  return np.concatenate([
      batch['image'].reshape((-1,) + batch['image'].shape[2:])
      for batch in pipeline.train_batches(epoch, start_step=start_step)])


def _validation_images(pipeline: input_pipeline.Pipeline) -> np.ndarray:
  """The real (unpadded) images of the validation batches in order."""
  return np.concatenate([batch['image'][batch['mask']]
                         for batch in pipeline.validation_batches(7)])


def _numpy_mean(images: np.ndarray, mode: str) -> np.ndarray:
  """numpy's float64 mean of (N, H, W, C) images: per pixel, or per channel."""
  axes = (0,) if mode == 'image' else (0, 1, 2)
  return images.astype(np.float64).mean(axis=axes)


@pytest.mark.parametrize('grayscale', [True, False])
@pytest.mark.parametrize('mode', ['image', 'pixel'])
def test_training_batches_are_less_the_training_mean(tiny_config, mode,
                                                     grayscale):
  tiny_config.grayscale = grayscale
  channels = 1 if grayscale else 3
  raw = _pipeline(tiny_config, 'none')
  pipeline = _pipeline(tiny_config, mode)

  raw_split = _train_images(raw, epoch=0)
  expected = _numpy_mean(raw_split, mode)

  assert len(raw_split) == NUM_TRAIN
  assert pipeline.mean.shape == expected.shape == {
      'image': (28, 28, channels), 'pixel': (channels,)}[mode]
  np.testing.assert_allclose(pipeline.mean, expected, rtol=1e-6)
  # Each epoch, a resumed one too, is its raw batches less the same mean.
  for epoch, start_step in [(0, 0), (1, 0), (1, 5)]:
    np.testing.assert_allclose(
        _train_images(pipeline, epoch, start_step),
        _train_images(raw, epoch, start_step) - expected, atol=ATOL)


@pytest.mark.parametrize('mode', ['image', 'pixel'])
def test_validation_batches_are_less_the_training_mean(tiny_config, mode):
  raw = _pipeline(tiny_config, 'none')
  pipeline = _pipeline(tiny_config, mode)
  training_mean = _numpy_mean(_train_images(raw, epoch=0), mode)
  raw_validation = _validation_images(raw)
  # The validation split's own mean differs: the check below tells them apart.
  assert np.abs(_numpy_mean(raw_validation, mode)
                - training_mean).max() > 100 * ATOL

  batches = list(pipeline.validation_batches(7))

  np.testing.assert_allclose(_validation_images(pipeline),
                             raw_validation - training_mean, atol=ATOL)
  assert len(raw_validation) == NUM_VALIDATION
  padding = batches[-1]['image'][~batches[-1]['mask']]
  assert len(padding) == 1
  np.testing.assert_array_equal(padding, 0)


def test_none_leaves_the_images_as_preprocessed(tiny_config):
  pipeline = _pipeline(tiny_config, 'none')
  stored = {
      split: [e['image'].tobytes() for e in input_pipeline.preprocess(
          getattr(pipeline.splits, split), tiny_config.image_size,
          tiny_config.grayscale).as_numpy_iterator()]
      for split in ('train', 'validation')}

  # Bit for bit: the epoch a permutation of the stored images, the validation
  # batches them in order.
  assert sorted(image.tobytes() for image in _train_images(
      pipeline, epoch=0)) == sorted(stored['train'])
  assert [image.tobytes() for image in _validation_images(
      pipeline)] == stored['validation']
  assert pipeline.mean is None


def test_mean_is_computed_once_from_the_cache(tiny_config, reads, caplog):
  caplog.set_level(logging.INFO, logger='absl')

  pipeline = _pipeline(tiny_config, 'image')
  list(pipeline.train_batches(0))
  list(pipeline.validation_batches(7))

  assert pipeline.mean is not None
  # Each example read once, to fill the cache, which the mean was taken from.
  assert len(reads) == NUM_TRAIN + NUM_VALIDATION
  assert caplog.text.count("Mean subtraction 'image': the mean of 60 training "
                           'images, shape (28, 28, 1)') == 1


def test_unknown_mean_subtraction_is_an_input_error(tiny_config, reads):
  with pytest.raises(errors.InputError) as raised:
    _pipeline(tiny_config, 'median')

  assert str(raised.value) == (
      "mean_subtraction='median' is not one of none, image, pixel")
  assert not reads  # Refused before the dataset is read.
