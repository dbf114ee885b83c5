"""Input pipeline: dataset source -> resized, cached, shuffled, device-shaped batches.

`config.dataset` picks the source: 'tombstone_letters' (generated, built once
into the TFDS data dir), a path to a folder of class subfolders (DIGITS
layout), or any other TFDS catalog name (e.g. 'mnist'). Making a `Pipeline`
reads every example once, into numpy arrays in memory that every epoch
gathers its batches from, so damaged dataset files show before training: the
generated dataset is then built anew, and a catalog one, which lettercnn
cannot rebuild, is an error.

Training batches come shaped (devices, per_device_batch, H, W, C) so that
`jax.pmap` maps the leading axis over devices; training chunks, the batches
of several consecutive steps, (devices, steps, per_device_batch, H, W, C).
Images stay float32 in 0..255, less the training split's mean where
`config.mean_subtraction` asks for DIGITS' mean subtraction; the model applies
DIGITS' input scale after it, as DIGITS does: (image - mean) * scale.
"""

import contextlib
import copy
import dataclasses
import functools
import io
import os
import re
import shutil
from typing import Callable, Iterator, NamedTuple, TypeVar

from absl import logging
from google.protobuf import json_format
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from lettercnn import errors
from lettercnn.run import file_lock
from lettercnn.data import splits
from lettercnn.data import tombstone_letters

Batch = dict[str, np.ndarray]
_T = TypeVar('_T')

# Training steps gathered at once, and run by one call of the train step
# (`train.train_chunk`): far cheaper than a call of each per step. A chunk
# holds at most `_CHUNK_BYTES` of images (`Pipeline.steps_per_chunk`), since
# every chunk is padded to its full length and copied whole to the device
# (docs/performance.md, "How the CPU step is built").
MAX_STEPS_PER_CHUNK = 64
_CHUNK_BYTES = 8 << 20

# Examples read from tf.data, or summed into the mean, at once: few calls, yet
# at most ~100 MB of float32 even at AlexNet's 256x256 RGB.
_READ_BATCH = 128

# What reading a TFDS dataset with damaged files raises, as tried on each
# kind of damage: protobuf's ParseError (a json_format.Error) for malformed
# JSON in dataset_info.json or features.json, UnicodeDecodeError (a
# ValueError) for binary garbage there, ValueError for well-formed JSON with
# bad values (a garbled file name template, feature class, ...),
# AssertionError for a dataset_info.json without the version,
# DatasetInfoFileError (an OSError) for a missing one, and from tf.data an
# OpError for the records: DataLossError for a truncated or overwritten
# shard, NotFoundError for a deleted one, FailedPreconditionError for fewer
# records than dataset_info.json counts.
_UNREADABLE = (json_format.Error, ValueError, AssertionError, OSError,
               tf.errors.OpError)


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


def load_splits(config: ml_collections.ConfigDict,
                read: Callable[[splits.Splits], _T]) -> _T:
  """Calls `read` on the raw train/validation splits of `config.dataset`.

  `read` must read every example of both splits (as `Pipeline` does, filling
  its caches), so that damaged TFDS files show here, before training: the
  generated dataset is then deleted and built again, and a catalog dataset,
  which lettercnn cannot rebuild, is an InputError.
  """
  if config.dataset == 'tombstone_letters':
    return _generated_splits(config, read)
  if is_folder_dataset(config.dataset):
    from lettercnn.data import folder_dataset  # pylint: disable=g-import-not-at-top
    return read(folder_dataset.load_folder_splits(config))
  return _catalog_splits(config, read)


def _data_dir(config: ml_collections.ConfigDict) -> str:
  """`config.data_dir`, or TFDS' default: the one folder builders are given."""
  return os.path.expanduser(config.data_dir or tfds.core.constants.DATA_DIR)


def _generated_splits(config: ml_collections.ConfigDict,
                      read: Callable[[splits.Splits], _T]) -> _T:
  builder_config = tombstone_letters.config_for(
      config.examples_per_class, config.validation_fraction,
      config.dataset_seed)
  data_dir = _data_dir(config)
  folder = tombstone_letters.dataset_dir(data_dir, builder_config)

  def build_and_read() -> _T:
    # Made under the lock: a builder made before another process finished
    # building would not see that process's dataset info.
    builder = tombstone_letters.TombstoneLetters(config=builder_config,
                                                 data_dir=data_dir)
    if not builder.is_prepared():
      logging.info('Building the dataset into %s (once).', folder)
    # TFDS prints its own notices of that to stdout.
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare()
    missing = _missing_splits(builder, ('train', 'validation'))
    if missing:  # TFDS reuses a folder that lost its dataset_info.json.
      raise _UnreadableDataset(
          f'its dataset_info.json lists no {missing} split')
    return read(_tfds_splits(builder, 'train', 'validation'))

  return _built_once(folder, build_and_read)


class _UnreadableDataset(Exception):
  """A dataset's files cannot be read; the message says what failed."""


def _read(read: Callable[[], _T]) -> _T:
  """`read()`, raising _UnreadableDataset where TFDS files fail to read."""
  try:
    return read()
  except errors.InputError:
    raise
  except _UNREADABLE as e:
    raise _UnreadableDataset(_detail(e)) from e


def _detail(e: Exception) -> str:
  """`e` as one line, less the names of the tf.data ops it failed in."""
  text = e.message if isinstance(e, tf.errors.OpError) else str(e)
  text = re.sub(r'\{\{function_node [^}]*\}\}|\[Op:\w+\].*', '', text)
  return ' '.join(f'{type(e).__name__}: {text}'.split())


def _built_once(folder: str, build_and_read: Callable[[], _T]) -> _T:
  """Returns `build_and_read()`, which builds the dataset at `folder` if needed.

  Runs of a sweep started together would race to build the same dataset; a
  lock file beside it makes the later ones wait, then reuse it. They read it
  under the lock too, so that a dataset found damaged (it is a cache of
  deterministic data) is deleted and built again while no run reads it.
  """
  with _lock(folder + '.lock'):
    try:
      return _read(build_and_read)
    except _UnreadableDataset as e:
      logging.warning('Deleting and rebuilding the unreadable generated '
                      'dataset %s (%s).', folder, e)
    _delete(folder)
    try:
      return _read(build_and_read)
    except _UnreadableDataset as e:
      raise errors.InputError(
          f'the generated dataset {folder} cannot be read even when built '
          f'anew ({e}); check the disk, or set data_dir elsewhere') from e


@contextlib.contextmanager
def _lock(path: str) -> Iterator[None]:
  """Holds an flock on `path`, made with its folder; one line if it cannot."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = file_lock.acquire(path, blocking=True)
  except OSError as e:
    raise errors.InputError(
        f'cannot create the dataset lock file {path} ({e.strerror or e}); '
        'data_dir must be a writable folder') from e
  try:
    yield
  finally:
    os.close(fd)


def _delete(folder: str) -> None:
  try:
    shutil.rmtree(folder)
  except FileNotFoundError:
    pass
  except OSError as e:
    raise errors.InputError(
        f'cannot delete the unreadable dataset {folder} ({e.strerror or e}); '
        'delete it by hand') from e


def _catalog_splits(config: ml_collections.ConfigDict,
                    read: Callable[[splits.Splits], _T]) -> _T:
  builder = _catalog_builder(config)
  validation = 'validation' if 'validation' in builder.info.splits else 'test'
  _check_classification(config.dataset, builder, ('train', validation))
  try:
    return _read(lambda: read(_tfds_splits(builder, 'train', validation)))
  except _UnreadableDataset as e:
    raise errors.InputError(
        _damaged(config.dataset, builder.data_dir, str(e))) from e


def _catalog_builder(
    config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The prepared builder of a TFDS catalog dataset, its metadata read."""
  data_dir = _data_dir(config)
  try:
    builder = tfds.builder(config.dataset, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.InputError(
        f'dataset {config.dataset!r} is neither tombstone_letters, an existing '
        'folder, nor a TFDS catalog name') from e
  # Making it reads dataset_info.json and features.json, and TFDS raises many
  # exception types on malformed ones.
  except Exception as e:  # pylint: disable=broad-except
    folder = os.path.join(data_dir, config.dataset.replace(':', '/'))
    raise errors.InputError(
        _damaged(config.dataset, folder, _detail(e))) from e
  if not builder.is_prepared():
    raise errors.InputError(
        f'TFDS dataset {config.dataset!r} is not prepared in {builder.data_dir}'
        ' and lettercnn downloads nothing: build it where the internet is '
        'reachable (`tfds build NAME`) and copy it there, or set data_dir')
  return builder


def _damaged(name: str, folder: str, detail: str) -> str:
  return (f'TFDS dataset {name!r} in {folder} cannot be read ({detail}); '
          'lettercnn downloads nothing, so rebuild it where the internet is '
          f'reachable (`tfds build {name}`) and copy it over that folder')


def _check_classification(name: str, builder: tfds.core.DatasetBuilder,
                          split_names: tuple[str, ...]) -> None:
  """Raises InputError unless `builder` has these splits of labelled images."""
  info = builder.info
  missing = _missing_splits(builder, split_names)
  if missing:
    raise errors.InputError(
        f'TFDS dataset {name!r} in {builder.data_dir} has no {missing} split '
        f'(it has: {", ".join(sorted(info.splits)) or "none"}); lettercnn '
        "trains on 'train' and validates on 'validation' or 'test'")
  features = info.features
  if not ('image' in features and 'label' in features and isinstance(
      features['label'], tfds.features.ClassLabel)):
    raise errors.InputError(
        f"TFDS dataset {name!r} in {builder.data_dir} has no 'image' feature "
        "and 'label' class label (its features: "
        f"{', '.join(sorted(features.keys()))}); lettercnn trains image "
        'classifiers')


def _missing_splits(builder: tfds.core.DatasetBuilder,
                    names: tuple[str, ...]) -> str:
  """The names of `names` that `builder` lacks, quoted and joined, or ''."""
  return ', '.join(repr(n) for n in names if n not in builder.info.splits)


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


# No autotuning: these pipelines are small and fixed, with nothing to tune,
# and an iterator reaching its end waits for the autotuner's next period
# (docs/performance.md, "How the CPU step is built").
_OPTIONS = tf.data.Options()
_OPTIONS.autotune.enabled = False


class _Examples(NamedTuple):
  """A split in memory: images (N, H, W, C) float32, labels (N,) int32."""
  images: np.ndarray
  labels: np.ndarray


class _Cached(NamedTuple):
  """Raw splits, and the preprocessed splits read into memory."""
  splits: splits.Splits
  train: _Examples
  validation: _Examples


def _cached(config: ml_collections.ConfigDict,
            source: splits.Splits) -> _Cached:
  """`source`, and its splits preprocessed and read into memory now."""
  if source.num_train < config.batch_size:
    raise errors.InputError(
        f'batch_size={config.batch_size} exceeds the {source.num_train}'
        f' training images of {config.dataset}; use a smaller batch_size')
  train, validation = (
      _in_memory(preprocess(split, config.image_size, config.grayscale), count)
      for split, count in ((source.train, source.num_train),
                           (source.validation, source.num_validation)))
  return _Cached(source, train, validation)


def _in_memory(dataset: tf.data.Dataset, count: int) -> _Examples:
  """Reads the `count` examples of `dataset`, in order, into numpy arrays.

  Every epoch then gathers its batches from them, with no tf.data pass of
  its own (which cost ~20 ms an epoch of 1500 images, on the cores the step
  runs on), and a record that cannot be read fails now, before training.

  Raises:
    ValueError: the dataset holds more or fewer examples than `count` (the
      count its metadata gives), as a damaged one can.
  """
  images, labels, read = None, np.empty(count, np.int32), 0
  batches = dataset.with_options(_OPTIONS).batch(_READ_BATCH)
  for batch in batches.as_numpy_iterator():
    size = len(batch['label'])
    if read + size > count:
      raise ValueError(f'the split holds more than the {count} examples its '
                       'metadata counts')
    if images is None:
      images = np.empty((count,) + batch['image'].shape[1:], np.float32)
    images[read:read + size] = batch['image']
    labels[read:read + size] = batch['label']
    read += size
  if read != count:
    raise ValueError(f'the split holds {read} examples where its metadata '
                     f'counts {count}')
  return _Examples(images, labels)


def _training_mean(images: np.ndarray, mode: str) -> np.ndarray | None:
  """What `mode` subtracts: a mean over the training `images`, or None.

  Summed in float64, so that rounding does not grow with the split; returned
  in float32, the values the batches have subtracted, so that a classifier
  given it feeds its model exactly what training did.
  """
  if mode == 'none':
    return None
  total = 0.0
  for start in range(0, len(images), _READ_BATCH):
    total = total + images[start:start + _READ_BATCH].sum(axis=0,
                                                          dtype=np.float64)
  mean = total / len(images)
  if mode == 'pixel':  # Every pixel averages len(images): equal weights.
    mean = mean.mean(axis=(0, 1))
  mean = mean.astype(np.float32)
  logging.info('Mean subtraction %r: the mean of %d training images, shape %s,'
               ' %.2f to %.2f, average %.2f.', mode, len(images), mean.shape,
               mean.min(), mean.max(), mean.mean())
  return mean


@dataclasses.dataclass(frozen=True)
class ProcessShare:
  """The part of every batch one process of a multi-process run feeds.

  `device_rows`: the positions of its devices among the run's `num_devices`
  (each device takes `batch_size // num_devices` consecutive examples of a
  global batch); `index` of `count` processes, for validation batches, which
  processes take in turn.
  """
  device_rows: tuple[int, ...]
  index: int = 0
  count: int = 1


class Pipeline:
  """Preprocessed splits in memory and the batches drawn from them.

  `mean` is what every batch, training and validation alike, has had
  subtracted (`config.mean_subtraction`): the training split's mean image
  (H, W, C), its mean of each channel (C,), or None. It is subtracted once,
  from the splits in memory, so batches are gathered with nothing to add.

  With a `share` (multi-process runs), every process shuffles the same
  global batches, as one process would, and keeps only its share of each:
  its devices' rows of a training batch, and every `share.count`-th
  validation batch. Without one, this process feeds all `num_devices`.
  """

  def __init__(self, config: ml_collections.ConfigDict, num_devices: int,
               share: ProcessShare | None = None):
    # config_checks rejects it first; this guard keeps other callers from
    # reading the whole dataset before failing on it.
    if config.mean_subtraction not in splits.MEAN_SUBTRACTIONS:
      raise errors.InputError(
          f'mean_subtraction={config.mean_subtraction!r} is not one of '
          f'{", ".join(splits.MEAN_SUBTRACTIONS)}')
    self.splits, self._train, self._validation = load_splits(
        config, functools.partial(_cached, config))
    self.mean = _training_mean(self._train.images, config.mean_subtraction)
    if self.mean is not None:
      self._train.images[...] -= self.mean
      self._validation.images[...] -= self.mean
    self.num_devices = num_devices
    self.share = share or ProcessShare(tuple(range(num_devices)))
    self.batch_size = config.batch_size
    self.seed = config.seed

  @property
  def steps_per_epoch(self) -> int:
    return self.splits.num_train // self.batch_size

  @property
  def steps_per_chunk(self) -> int:
    """The longest chunk: as many steps as fit in 8 MB of images, 1 to 64.

    Of the global batch, so that every process of a run cuts alike.
    """
    batch_bytes = self.batch_size * self._train.images[0].nbytes
    return max(1, min(MAX_STEPS_PER_CHUNK, _CHUNK_BYTES // batch_bytes))

  def train_chunks(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
    """Yields epoch `epoch`'s batches from its step `start_step` on, in chunks.

    A chunk holds up to `steps_per_chunk` consecutive steps. The order is a
    function of (seed, epoch) alone (`_epoch_order`), so a resumed run sees
    the same batches as an uninterrupted one; the incomplete last batch of
    an epoch is dropped. Images come shaped (devices, steps,
    per_device_batch, H, W, C), labels (devices, steps, per_device_batch),
    for the devices of `share`, gathered alone. Chunks end at the multiples
    of `steps_per_chunk` counted from the start of the epoch, and at its
    end, so a run resumed mid-epoch cuts the rest of the epoch as an
    uninterrupted one does: the first chunk may be shorter, and so may the
    last.
    """
    steps = self.steps_per_epoch
    order = self._epoch_order(epoch)[:steps * self.batch_size].reshape(
        steps, self.num_devices, self.batch_size // self.num_devices)
    order = order[:, self.share.device_rows]
    first, length = start_step, self.steps_per_chunk
    while first < steps:
      end = min((first // length + 1) * length, steps)
      indices = np.swapaxes(order[first:end], 0, 1)
      yield {'image': self._train.images[indices],
             'label': self._train.labels[indices]}
      first = end

  def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
    """`train_chunks` one step at a time: (devices, per_device_batch, ...)."""
    for chunk in self.train_chunks(epoch, start_step):
      for step in range(chunk_steps(chunk)):
        yield {k: v[:, step] for k, v in chunk.items()}

  def reseeded(self, seed: int) -> 'Pipeline':
    """This pipeline with the batch order of `seed`; the data is shared."""
    other = copy.copy(self)
    other.seed = seed
    return other

  def first_train_examples(self, count: int) -> Batch:
    """The split's first `count` training examples, as training feeds them.

    In the split's stored order, whatever the seed: a fixed subset (the one
    `lettercnn.optim.sharpness` measures the loss over). Images have `mean`
    subtracted, (count, H, W, C); labels (count,).
    """
    if not 0 < count <= self.splits.num_train:
      raise errors.InputError(
          f'{count} training examples asked for, but the split has '
          f'{self.splits.num_train}')
    return {'image': self._train.images[:count].copy(),
            'label': self._train.labels[:count].copy()}

  def _epoch_order(self, epoch: int) -> np.ndarray:
    """The training examples' indices in epoch `epoch`'s order.

    A function of (seed, epoch) alone: tf.data's shuffle of the indices with
    the seed `seed * 100_003 + epoch`. This order is part of every result
    (the README's tables and `params_sha256`s): replacing it, e.g. with
    numpy's permutation, changes every run.
    """
    count = self.splits.num_train
    indices = tf.data.Dataset.range(count).shuffle(
        count, seed=self.seed * 100_003 + epoch,
        reshuffle_each_iteration=False).with_options(_OPTIONS)
    return indices.batch(count).get_single_element().numpy()

  def validation_batches(self, batch_size: int) -> Iterator[Batch]:
    """Yields the whole validation split in batches of exactly `batch_size`.

    The last batch is padded with zeros; 'mask' marks the real examples, so
    every example counts once and compiled shapes never change. The images
    have the training split's `mean` subtracted, as the model was trained.
    A process of several yields only its share: batches `share.index`,
    `share.index + share.count`, ...
    """
    images, labels = self._validation
    starts = range(0, len(labels), batch_size)
    for start in starts[self.share.index::self.share.count]:
      num_real = min(batch_size, len(labels) - start)
      pad = batch_size - num_real
      yield {
          'image': np.pad(images[start:start + batch_size],
                          [(0, pad)] + [(0, 0)] * 3),
          'label': np.pad(labels[start:start + batch_size], (0, pad)),
          'mask': np.arange(batch_size) < num_real,
      }
