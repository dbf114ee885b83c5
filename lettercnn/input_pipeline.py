"""Input pipeline: dataset source -> resized, cached, shuffled, device-shaped batches.

`config.dataset` picks the source: 'tombstone_letters' (generated, built once
into the TFDS data dir), a path to a folder of class subfolders (DIGITS
layout), or any other TFDS catalog name (e.g. 'mnist').

Training batches come shaped (devices, per_device_batch, H, W, C) so that
`jax.pmap` maps the leading axis over devices; training chunks, the batches
of several consecutive steps, (devices, steps, per_device_batch, H, W, C).
Images stay float32 in 0..255; the model applies DIGITS' input scale.
"""

import fcntl
import os
from typing import Callable, Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from lettercnn import errors
from lettercnn import splits
from lettercnn import tombstone_letters

Batch = dict[str, np.ndarray]

# Training steps fetched from tf.data at once, and run by one call of the
# train step (`train.train_chunk`): far cheaper than a call of each per step.
STEPS_PER_CHUNK = 64


def chunk_steps(chunk: Batch) -> int:
  """The number of training steps in a chunk shaped (devices, steps, ...)."""
  return chunk['label'].shape[1]


def is_folder_dataset(name: str) -> bool:
  """Whether `config.dataset` names a folder rather than a TFDS dataset.

  An existing folder, or anything written as a path ('./x', '/x', '~/x'), so
  that a mistyped path gets the folder's error; 'name/config' is TFDS'.
  """
  return os.path.isdir(os.path.expanduser(name)) or name.startswith(
      ('.', '/', '~'))


def load_splits(config: ml_collections.ConfigDict) -> splits.Splits:
  """Returns the raw train/validation splits of `config.dataset`."""
  if config.dataset == 'tombstone_letters':
    builder_config = tombstone_letters.config_for(
        config.examples_per_class, config.validation_fraction, config.seed)
    builder = _built_once(lambda: tombstone_letters.TombstoneLetters(
        config=builder_config, data_dir=config.data_dir))
    return _tfds_splits(builder, 'train', 'validation')
  if is_folder_dataset(config.dataset):
    from lettercnn import folder_dataset  # pylint: disable=g-import-not-at-top
    return folder_dataset.load_folder_splits(config)
  try:
    builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.InputError(
        f'dataset {config.dataset!r} is neither tombstone_letters, an existing '
        'folder, nor a TFDS catalog name') from e
  if not builder.is_prepared():
    raise errors.InputError(
        f'TFDS dataset {config.dataset!r} is not prepared in {builder.data_dir}'
        ' and lettercnn downloads nothing: build it where the internet is '
        'reachable (`tfds build NAME`) and copy it there, or set data_dir')
  return _tfds_splits(builder, 'train',
                      'validation' if 'validation' in builder.info.splits
                      else 'test')


def _built_once(
    make_builder: Callable[[], tfds.core.DatasetBuilder]
) -> tfds.core.DatasetBuilder:
  """A generated dataset's builder, built by this process or a concurrent one.

  Runs of a sweep started together would race to build the same dataset;
  a lock file beside it makes the later ones wait, then reuse it.
  """
  lock_path = os.fspath(make_builder().data_dir) + '.lock'
  os.makedirs(os.path.dirname(lock_path), exist_ok=True)
  with open(lock_path, 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    # Made anew under the lock: a builder made before another process
    # finished building would not see that process's dataset info.
    builder = make_builder()
    builder.download_and_prepare()
  return builder


def _tfds_splits(builder: tfds.core.DatasetBuilder, train_split: str,
                 validation_split: str) -> splits.Splits:
  info = builder.info
  label_feature = info.features['label']

  def as_dataset(split: str) -> tf.data.Dataset:
    return builder.as_dataset(split=split, shuffle_files=False).map(
        lambda ex: {'image': ex['image'], 'label': ex['label']})

  return splits.Splits(
      train=as_dataset(train_split),
      validation=as_dataset(validation_split),
      num_train=info.splits[train_split].num_examples,
      num_validation=info.splits[validation_split].num_examples,
      class_names=tuple(label_feature.names))


def preprocess(dataset: tf.data.Dataset, image_size: int,
               grayscale: bool) -> tf.data.Dataset:
  """Squashes images to image_size (like DIGITS) in 1 or 3 channels, float32."""

  def convert(example):
    image = tf.cast(example['image'], tf.float32)
    channels = image.shape[-1]
    if grayscale and channels != 1:
      image = tf.image.rgb_to_grayscale(image[..., :3])
    elif not grayscale and channels == 1:
      image = tf.image.grayscale_to_rgb(image)
    if image.shape[0] != image_size or image.shape[1] != image_size:
      image = tf.image.resize(image, (image_size, image_size), antialias=True)
    return {'image': image, 'label': tf.cast(example['label'], tf.int32)}

  return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


# No autotuning: with it on, an iterator reaching its end waited for the
# autotuner's next period, up to ~1.3 s at each epoch's end while the step ran
# on the same cores (a 1500-step batch-1 epoch took 1.29 or 2.57 s instead of
# ~1.1 s). These pipelines are small and fixed, with nothing worth tuning.
_OPTIONS = tf.data.Options()
_OPTIONS.autotune.enabled = False


class Pipeline:
  """Preprocessed, in-memory-cached splits and the batches drawn from them."""

  def __init__(self, config: ml_collections.ConfigDict, num_devices: int):
    self.splits = load_splits(config)
    if self.splits.num_train < config.batch_size:
      raise errors.InputError(
          f'batch_size={config.batch_size} exceeds the {self.splits.num_train}'
          f' training images of {config.dataset}; use a smaller batch_size')
    self.num_devices = num_devices
    self.batch_size = config.batch_size
    self.seed = config.seed
    self._train = preprocess(self.splits.train, config.image_size,
                             config.grayscale).cache().with_options(_OPTIONS)
    self._validation = preprocess(
        self.splits.validation, config.image_size,
        config.grayscale).cache().with_options(_OPTIONS)

  @property
  def steps_per_epoch(self) -> int:
    return self.splits.num_train // self.batch_size

  def train_chunks(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
    """Yields epoch `epoch`'s batches from its step `start_step` on, in chunks.

    A chunk holds up to `STEPS_PER_CHUNK` consecutive steps. The order is a
    function of (seed, epoch) alone, so a resumed run sees the same batches
    as an uninterrupted one; the incomplete last batch of an epoch is
    dropped. Images come shaped (devices, steps, per_device_batch,
    H, W, C), labels (devices, steps, per_device_batch). Chunks end at the
    multiples of `STEPS_PER_CHUNK` counted from the start of the epoch, and
    at its end, so a run resumed mid-epoch cuts the rest of the epoch as an
    uninterrupted one does: the first chunk may be shorter, and so may the
    last.
    """
    per_device = self.batch_size // self.num_devices
    first_chunk, first_step = divmod(start_step, STEPS_PER_CHUNK)
    dataset = self._epoch_batches(epoch).batch(STEPS_PER_CHUNK)
    dataset = dataset.skip(first_chunk).prefetch(2)
    for chunk in dataset.as_numpy_iterator():
      images, labels = chunk['image'][first_step:], chunk['label'][first_step:]
      first_step = 0
      steps = len(labels)
      images = images.reshape(
          (steps, self.num_devices, per_device) + images.shape[2:])
      labels = labels.reshape((steps, self.num_devices, per_device))
      yield {'image': np.swapaxes(images, 0, 1),
             'label': np.swapaxes(labels, 0, 1)}

  def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
    """`train_chunks` one step at a time: (devices, per_device_batch, ...)."""
    for chunk in self.train_chunks(epoch, start_step):
      for step in range(chunk_steps(chunk)):
        yield {k: v[:, step] for k, v in chunk.items()}

  def _epoch_batches(self, epoch: int) -> tf.data.Dataset:
    """The training batches of `epoch` in order; a function of (seed, epoch)."""
    dataset = self._train.shuffle(
        self.splits.num_train, seed=self.seed * 100_003 + epoch,
        reshuffle_each_iteration=False)
    return dataset.batch(self.batch_size, drop_remainder=True)

  def validation_batches(self, batch_size: int) -> Iterator[Batch]:
    """Yields the whole validation split in batches of exactly `batch_size`.

    The last batch is padded with zeros; 'mask' marks the real examples, so
    every example counts once and compiled shapes never change.
    """
    for batch in self._validation.batch(batch_size).as_numpy_iterator():
      num_real = len(batch['label'])
      pad = batch_size - num_real
      yield {
          'image': np.pad(batch['image'], [(0, pad)] + [(0, 0)] * 3),
          'label': np.pad(batch['label'], (0, pad)),
          'mask': np.arange(batch_size) < num_real,
      }
