"""Tests of the input pipeline: batch shapes, seeded shuffling, resume, eval."""

import glob
import hashlib
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image
import pytest

from configs import default
from lettercnn import errors
from lettercnn.data import input_pipeline
from lettercnn.models import networks as models
from lettercnn.run import status as run_status
from lettercnn.run import events as tb_events
from lettercnn import train

NUM_DEVICES = 2
NUM_TRAIN = 60  # tiny_config: 6 training images of each of 10 letters.
NUM_VALIDATION = 20


def _pipeline(config, batch_size: int = 4) -> input_pipeline.Pipeline:
  config.batch_size = batch_size
  return input_pipeline.Pipeline(config, NUM_DEVICES)


def _unshaped_config(config):
  """`config` at the stored 64x64 RGB, so pipeline images equal stored ones."""
  config.image_size = 64
  config.grayscale = False
  return config


def _fingerprint(image: np.ndarray, label) -> str:
  """Identifies one example by its pixels (as uint8) and its label."""
  pixels = np.asarray(image).astype(np.uint8).tobytes()
  return hashlib.sha256(pixels + str(int(label)).encode()).hexdigest()


def _epoch(pipeline: input_pipeline.Pipeline, epoch: int,
           start_step: int = 0) -> list[list[str]]:
  """Fingerprints of each batch of the epoch, in order."""
  return [
      [_fingerprint(image, label) for image, label in zip(
          batch['image'].reshape((-1,) + batch['image'].shape[2:]),
          batch['label'].ravel())]
      for batch in pipeline.train_batches(epoch, start_step=start_step)
  ]


def _split_fingerprints(dataset) -> list[str]:
  return [_fingerprint(e['image'], e['label'])
          for e in dataset.as_numpy_iterator()]


def _epoch_labels(pipeline: input_pipeline.Pipeline, epoch: int) -> list[int]:
  return [int(label) for batch in pipeline.train_batches(epoch)
          for label in batch['label'].ravel()]


def test_batches_are_device_shaped(tiny_config):
  pipeline = _pipeline(tiny_config, batch_size=4)

  batches = list(pipeline.train_batches(epoch=0))

  assert pipeline.steps_per_epoch == NUM_TRAIN // 4
  assert len(batches) == pipeline.steps_per_epoch
  for batch in batches:
    assert batch['image'].shape == (NUM_DEVICES, 2, 28, 28, 1)
    assert batch['image'].dtype == np.float32
    assert batch['label'].shape == (NUM_DEVICES, 2)


def test_incomplete_last_batch_is_dropped(tiny_config):
  pipeline = _pipeline(_unshaped_config(tiny_config), batch_size=8)

  batches = _epoch(pipeline, epoch=0)

  assert pipeline.steps_per_epoch == len(batches) == NUM_TRAIN // 8
  seen = [f for batch in batches for f in batch]
  assert len(set(seen)) == len(seen) == 56
  assert set(seen) <= set(_split_fingerprints(pipeline.splits.train))


def test_batch_larger_than_the_training_split_is_an_input_error(tiny_config):
  with pytest.raises(errors.InputError, match='batch_size=64 exceeds the 60'):
    _pipeline(tiny_config, batch_size=64)


def test_every_epoch_is_a_new_permutation_of_the_training_split(tiny_config):
  pipeline = _pipeline(_unshaped_config(tiny_config))
  split = _split_fingerprints(pipeline.splits.train)

  epochs = [sum(_epoch(pipeline, epoch), []) for epoch in range(3)]

  assert len(split) == NUM_TRAIN
  for order in epochs:
    assert sorted(order) == sorted(split)
  assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
  assert epochs[0] != split


def test_epoch_order_is_tf_datas_shuffle_of_the_examples(tiny_config):
  # Batches are gathered from memory in an order that tf.data computes for
  # the indices: the order in which shuffling the examples themselves (what
  # every run before that change trained on) yields them.
  tiny_config.seed = 3
  pipeline = _pipeline(_unshaped_config(tiny_config))

  for epoch in (0, 2):
    shuffled = pipeline.splits.train.shuffle(
        NUM_TRAIN, seed=3 * 100_003 + epoch, reshuffle_each_iteration=False)
    expected = [
        [_fingerprint(image, label)
         for image, label in zip(batch['image'], batch['label'])]
        for batch in shuffled.batch(4, drop_remainder=True).as_numpy_iterator()]

    assert _epoch(pipeline, epoch) == expected


def test_epochs_are_gathered_without_tf_data(tiny_config, monkeypatch):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  pipeline = _pipeline(tiny_config)
  expected = [_epoch(pipeline, 0), _epoch(pipeline, 1),
              list(pipeline.validation_batches(batch_size=7))]

  def refuse(*unused):
    raise AssertionError('an epoch iterated a tf.data dataset')

  monkeypatch.setattr(tf.data.Dataset, '__iter__', refuse)
  monkeypatch.setattr(tf.data.Dataset, 'as_numpy_iterator', refuse)

  assert [_epoch(pipeline, 0), _epoch(pipeline, 1)] == expected[:2]
  validation = list(pipeline.validation_batches(batch_size=7))
  for batch, reference in zip(validation, expected[2], strict=True):
    for key in ('image', 'label', 'mask'):
      np.testing.assert_array_equal(batch[key], reference[key])


@pytest.mark.parametrize('count', [5, 7])
def test_a_split_of_other_than_its_counted_size_is_refused(count):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dataset = tf.data.Dataset.from_tensor_slices(
      {'image': np.zeros((6, 2, 2, 1), np.float32),
       'label': np.arange(6, dtype=np.int32)})

  with pytest.raises(ValueError, match=f'the {count} examples|counts {count}'):
    input_pipeline._in_memory(dataset, count)  # pylint: disable=protected-access


@pytest.mark.parametrize('unshaped,batch_size,steps', [
    (False, 4, 64), (False, 48, 55), (True, 4, 42), (True, 48, 3)])
def test_a_chunk_holds_at_most_8_mb_of_images(tiny_config, unshaped,
                                               batch_size, steps):
  # 28x28x1 float32 images are 3136 bytes, 64x64x3 ones 49152.
  config = _unshaped_config(tiny_config) if unshaped else tiny_config

  assert _pipeline(config, batch_size).steps_per_chunk == steps


@pytest.mark.parametrize('start_step,lengths', [(0, [4, 4, 4, 3]),
                                                (6, [2, 4, 3])])
def test_chunks_end_at_multiples_of_steps_per_chunk(tiny_config, monkeypatch,
                                                     start_step, lengths):
  monkeypatch.setattr(input_pipeline, '_CHUNK_BYTES', 4 * 4 * 28 * 28 * 4)
  pipeline = _pipeline(tiny_config, batch_size=4)

  chunks = list(pipeline.train_chunks(1, start_step))

  assert pipeline.steps_per_chunk == 4
  assert [input_pipeline.chunk_steps(c) for c in chunks] == lengths
  steps = [{k: v[:, i] for k, v in c.items()} for c in chunks
           for i in range(input_pipeline.chunk_steps(c))]
  for step, batch in zip(steps, list(pipeline.train_batches(1))[start_step:],
                         strict=True):
    np.testing.assert_array_equal(step['image'], batch['image'])


def _stored_train_images(pipeline) -> list[bytes]:
  return [e['image'].tobytes()
          for e in pipeline.splits.train.as_numpy_iterator()]


def test_order_is_a_function_of_seed_and_epoch(tiny_config):
  first = _pipeline(tiny_config.copy_and_resolve_references())
  fresh = _pipeline(tiny_config.copy_and_resolve_references())
  tiny_config.seed = 1
  other_seed = _pipeline(tiny_config)

  assert _epoch(fresh, epoch=1) == _epoch(first, epoch=1)
  # Another seed trains on the same stored images, only in another order.
  assert _stored_train_images(other_seed) == _stored_train_images(first)
  assert _epoch_labels(other_seed, epoch=1) != _epoch_labels(first, epoch=1)


def test_dataset_seed_alone_changes_the_images(tiny_config):
  first = _pipeline(tiny_config.copy_and_resolve_references())
  tiny_config.dataset_seed = 1
  other_data = _pipeline(tiny_config)

  assert _stored_train_images(other_data) != _stored_train_images(first)


@pytest.mark.parametrize('start_step', [1, 5, 14, 15])
def test_resumed_epoch_yields_the_remaining_batches(tiny_config, start_step):
  pipeline = _pipeline(_unshaped_config(tiny_config))

  resumed = _epoch(pipeline, epoch=1, start_step=start_step)

  assert resumed == _epoch(pipeline, epoch=1)[start_step:]


def test_validation_batches_count_every_example_once(tiny_config):
  pipeline = _pipeline(_unshaped_config(tiny_config))

  batches = list(pipeline.validation_batches(batch_size=7))

  assert [len(b['label']) for b in batches] == [7, 7, 7]
  assert [int(b['mask'].sum()) for b in batches] == [7, 7, 6]
  assert not batches[-1]['mask'][-1]
  np.testing.assert_array_equal(batches[-1]['image'][-1], 0)
  real = [_fingerprint(image, label)
          for b in batches
          for image, label in zip(b['image'][b['mask']], b['label'][b['mask']])]
  assert len(real) == len(set(real)) == NUM_VALIDATION
  assert sorted(real) == sorted(
      _split_fingerprints(pipeline.splits.validation))


def _direct_metrics(params, model, pipeline) -> dict[str, float]:
  """Loss and accuracy on all validation examples at once."""
  whole = next(pipeline.validation_batches(NUM_VALIDATION))
  assert whole['mask'].all()
  logits = model.apply({'params': params}, jnp.asarray(whole['image']))
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits, whole['label'])
  correct = jnp.argmax(logits, axis=-1) == whole['label']
  return {'loss': float(losses.mean()), 'accuracy': float(correct.mean())}


def test_evaluate_matches_metrics_on_the_whole_split(tiny_config):
  pipeline = _pipeline(tiny_config)
  model = models.create_model('lenet', pipeline.splits.num_classes)
  # Random weights of the model's shapes, drawn by numpy: nothing to compile.
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 28, 28, 1)))['params']
  rng = np.random.default_rng(3)
  params = jax.tree.map(
      lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32), shapes)
  expected = _direct_metrics(params, model, pipeline)
  assert 0 < expected['accuracy'] < 1

  for batch_size in (7, 16):
    metrics = train.evaluate(params, model.apply, pipeline, batch_size)
    assert metrics['loss'] == pytest.approx(expected['loss'], abs=1e-5)
    assert metrics['accuracy'] == pytest.approx(expected['accuracy'],
                                                abs=1e-5)


def _noise(rng: np.random.Generator, size: tuple[int, int], channels: int,
           level: int) -> np.ndarray:
  """uint8 noise around `level`, so that classes differ in brightness."""
  shape = size[::-1] + ((channels,) if channels > 1 else ())
  return np.clip(rng.normal(level, 30, shape), 0, 255).astype(np.uint8)


def _write_class(folder: pathlib.Path, level: int,
                 rng: np.random.Generator) -> None:
  """One image in each of five formats and modes."""
  folder.mkdir(parents=True)
  Image.fromarray(_noise(rng, (20, 16), 1, level), 'L').save(
      folder / 'grey.png')
  rgba = np.dstack([_noise(rng, (12, 12), 3, level),
                    np.full((12, 12), 200, np.uint8)])
  Image.fromarray(rgba, 'RGBA').save(folder / 'alpha.png')
  Image.fromarray(_noise(rng, (40, 30), 3, level), 'RGB').save(
      folder / 'photo.jpg', quality=90)
  deep = _noise(rng, (28, 28), 1, level).astype(np.uint16) * 257
  Image.fromarray(deep).save(folder / 'deep.png')
  Image.fromarray(_noise(rng, (9, 14), 3, level), 'RGB').convert('P').save(
      folder / 'palette.gif')


def test_folder_dataset_trains_end_to_end(tmp_path):
  rng = np.random.default_rng(0)
  for name, level in (('dark', 40), ('mid', 128), ('light', 215)):
    _write_class(tmp_path / 'images' / name, level, rng)
  config = default.get_config()
  config.dataset = str(tmp_path / 'images')
  config.data_dir = str(tmp_path / 'data')
  config.num_epochs = 1
  config.batch_size = 2
  config.log_every_steps = 1
  config.eval_batch_size = 4
  config.learning_rate = 1e-3
  config.divergence_loss_factor = 100.0  # Losses of batches of 2 are noisy.
  workdir = str(tmp_path / 'work')

  status = train.train_and_evaluate(config, workdir)

  # 5 images per class: 1 validation and 4 training each; 12 / 2 = 6 steps.
  assert status['status'] in run_status.FINISHED
  assert status['steps_per_epoch'] == 6
  assert status['step'] == 6
  assert status['num_classes'] == 3
  assert glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  scalars = tb_events.read_scalars(workdir)
  assert [step for step, _ in scalars['train_loss']] == list(range(1, 7))
  assert [step for step, _ in scalars['val_loss']] == [6]
