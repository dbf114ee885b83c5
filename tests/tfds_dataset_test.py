"""Tests of TFDS datasets on disk: damaged files, the build lock, data_dir."""

import fcntl
import functools
import logging
import os
import pathlib
import shutil
import threading
import time
from typing import Callable, NamedTuple

import numpy as np
import pytest
import tensorflow as tf

from configs import default
from lettercnn import errors
from lettercnn.data import input_pipeline
from lettercnn.data import letter_render
from lettercnn.data import splits
from lettercnn.data import tombstone_letters

NUM_DEVICES = 2
# 3 training and 1 validation image of each of the 10 letters.
BUILDER_CONFIG = tombstone_letters.config_for(4, 0.25, 0)
NUM_TRAIN, NUM_VALIDATION = 30, 10
BATCH_SIZE = 4
# The built dataset loaded as a TFDS catalog dataset: 'name/config' whose
# config the code does not define is read from its files alone.
CATALOG_NAME = f'tombstone_letters/{BUILDER_CONFIG.name}'


class _Built(NamedTuple):
  data_dir: pathlib.Path
  train: tuple[np.ndarray, np.ndarray]
  validation: tuple[np.ndarray, np.ndarray]


def _examples(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
  """All images and labels of `dataset`, in order."""
  examples = list(dataset.as_numpy_iterator())
  return (np.stack([e['image'] for e in examples]),
          np.array([e['label'] for e in examples]))


@pytest.fixture(scope='module')
def pristine(tmp_path_factory) -> _Built:
  """A tiny tombstone_letters built once; tests damage copies of it."""
  data_dir = tmp_path_factory.mktemp('pristine')
  builder = tombstone_letters.TombstoneLetters(config=BUILDER_CONFIG,
                                               data_dir=str(data_dir))
  builder.download_and_prepare()
  return _Built(data_dir, *(
      _examples(builder.as_dataset(split=split, shuffle_files=False))
      for split in ('train', 'validation')))


def _config(data_dir: pathlib.Path, dataset: str = 'tombstone_letters'):
  config = default.get_config()
  config.dataset = dataset
  config.data_dir = str(data_dir)
  config.examples_per_class = BUILDER_CONFIG.examples_per_class
  config.validation_fraction = BUILDER_CONFIG.validation_fraction
  config.batch_size = BATCH_SIZE
  return config


def _folder(data_dir: pathlib.Path) -> pathlib.Path:
  return pathlib.Path(
      tombstone_letters.dataset_dir(str(data_dir), BUILDER_CONFIG))


def _copy(built: _Built, tmp_path: pathlib.Path) -> pathlib.Path:
  """A copy of the built data dir; returns the dataset folder in it."""
  shutil.copytree(built.data_dir, tmp_path / 'data')
  return _folder(tmp_path / 'data')


def _assert_as_built(source: splits.Splits, built: _Built) -> None:
  for split in ('train', 'validation'):
    images, labels = _examples(getattr(source, split))
    expected_images, expected_labels = getattr(built, split)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


def _count_renders(monkeypatch) -> list[str]:
  """The letters rendered from now on: a build renders every image."""
  rendered = []
  render = letter_render.render_letter

  def counting_render(letter, rng):
    rendered.append(letter)
    return render(letter, rng)

  monkeypatch.setattr(letter_render, 'render_letter', counting_render)
  return rendered


def _train_shard(folder: pathlib.Path) -> pathlib.Path:
  (shard,) = folder.glob('tombstone_letters-train.tfrecord-*')
  return shard


def _truncate_shard(folder: pathlib.Path) -> None:
  shard = _train_shard(folder)
  os.truncate(shard, shard.stat().st_size // 2)


def _overwrite_shard(folder: pathlib.Path) -> None:
  shard = _train_shard(folder)
  rng = np.random.default_rng(0)
  shard.write_bytes(rng.bytes(shard.stat().st_size))


def _delete_shard(folder: pathlib.Path) -> None:
  _train_shard(folder).unlink()


def _cut_info(folder: pathlib.Path) -> None:
  info = folder / 'dataset_info.json'
  text = info.read_text()
  info.write_text(text[:len(text) // 2])


def _overwrite_info(folder: pathlib.Path) -> None:
  (folder / 'dataset_info.json').write_bytes(
      np.random.default_rng(0).bytes(500))


def _delete_info(folder: pathlib.Path) -> None:
  (folder / 'dataset_info.json').unlink()


def _cut_features(folder: pathlib.Path) -> None:
  features = folder / 'features.json'
  text = features.read_text()
  features.write_text(text[:len(text) // 2])


_SHARD_DAMAGE = [_truncate_shard, _overwrite_shard, _delete_shard]
_INFO_DAMAGE = [_cut_info, _overwrite_info, _delete_info]


def _damage_id(damage: Callable[[pathlib.Path], None]) -> str:
  return damage.__name__.lstrip('_')


def test_dataset_dir_is_where_tfds_builds_it(pristine):
  builder = tombstone_letters.TombstoneLetters(
      config=BUILDER_CONFIG, data_dir=str(pristine.data_dir))

  assert str(_folder(pristine.data_dir)) == builder.data_dir


@pytest.mark.parametrize('damage', _SHARD_DAMAGE + _INFO_DAMAGE,
                         ids=_damage_id)
def test_damaged_generated_dataset_is_rebuilt(pristine, tmp_path, monkeypatch,
                                              caplog, damage):
  folder = _copy(pristine, tmp_path)
  damage(folder)
  rendered = _count_renders(monkeypatch)
  caplog.set_level(logging.WARNING)
  config = _config(tmp_path / 'data')

  pipeline = input_pipeline.Pipeline(config, NUM_DEVICES)

  assert len(rendered) == NUM_TRAIN + NUM_VALIDATION
  assert caplog.text.count('Deleting and rebuilding the unreadable '
                           f'generated dataset {folder} (') == 1
  _assert_as_built(pipeline.splits, pristine)
  # The rebuilt dataset reads as built: reused, not built again.
  caplog.clear()
  input_pipeline.Pipeline(config, NUM_DEVICES)
  assert len(rendered) == NUM_TRAIN + NUM_VALIDATION
  assert 'unreadable' not in caplog.text


def test_pipeline_reads_each_example_once(pristine, reads):
  pipeline = input_pipeline.Pipeline(_config(pristine.data_dir), NUM_DEVICES)

  # Read whole before training: a damaged record would have failed here.
  assert len(reads) == NUM_TRAIN + NUM_VALIDATION
  for epoch in range(2):
    assert len(list(pipeline.train_batches(epoch))) == NUM_TRAIN // BATCH_SIZE
    assert sum(int(batch['mask'].sum()) for batch in
               pipeline.validation_batches(BATCH_SIZE)) == NUM_VALIDATION
  assert len(reads) == NUM_TRAIN + NUM_VALIDATION  # The epochs read the cache.


def test_catalog_dataset_reads_as_built(pristine, monkeypatch):
  rendered = _count_renders(monkeypatch)

  pipeline = input_pipeline.Pipeline(
      _config(pristine.data_dir, dataset=CATALOG_NAME), NUM_DEVICES)

  assert not rendered
  _assert_as_built(pipeline.splits, pristine)


@pytest.mark.parametrize(
    'damage', _SHARD_DAMAGE + [_cut_info, _overwrite_info, _cut_features],
    ids=_damage_id)
def test_damaged_catalog_dataset_is_one_input_error(pristine, tmp_path,
                                                    monkeypatch, damage):
  folder = _copy(pristine, tmp_path)
  damage(folder)
  files = sorted(folder.iterdir())
  rendered = _count_renders(monkeypatch)

  with pytest.raises(errors.InputError) as raised:
    input_pipeline.Pipeline(_config(tmp_path / 'data', dataset=CATALOG_NAME),
                            NUM_DEVICES)

  message = str(raised.value)
  assert message.startswith(f'TFDS dataset {CATALOG_NAME!r} in '
                            f'{folder.parent}')
  assert ' cannot be read (' in message
  assert f'(`tfds build {CATALOG_NAME}`) and copy it over' in message
  assert '\n' not in message
  assert not rendered
  assert sorted(folder.iterdir()) == files  # Left as it was.


def _rename_train_split(folder: pathlib.Path) -> None:
  info = folder / 'dataset_info.json'
  info.write_text(info.read_text().replace('"name": "train"',
                                           '"name": "training"'))


def _rename_label_feature(folder: pathlib.Path) -> None:
  features = folder / 'features.json'
  features.write_text(features.read_text().replace('"label": {',
                                                   '"letter": {'))
  (folder / 'label.labels.txt').rename(folder / 'letter.labels.txt')


@pytest.mark.parametrize('edit, problem', [
    (_rename_train_split,
     "has no 'train' split (it has: training, validation)"),
    (_rename_label_feature, "has no 'image' feature and 'label' class label "
     '(its features: image, letter)'),
])
def test_catalog_dataset_without_train_split_or_labels_is_one_input_error(
    pristine, tmp_path, edit, problem):
  folder = _copy(pristine, tmp_path)
  edit(folder)

  with pytest.raises(errors.InputError) as raised:
    input_pipeline.Pipeline(_config(tmp_path / 'data', dataset=CATALOG_NAME),
                            NUM_DEVICES)

  assert str(raised.value).startswith(
      f'TFDS dataset {CATALOG_NAME!r} in {folder} {problem}; lettercnn ')


def _wait_until(condition: Callable[[], bool], what: str) -> None:
  deadline = time.monotonic() + 30
  while not condition():
    assert time.monotonic() < deadline, f'timed out waiting until {what}'
    time.sleep(0.01)


def test_build_lock_holds_when_its_file_is_removed(tmp_path, monkeypatch):
  """A holds the lock; its file is removed while B waits on it; then C comes.

  B, once A lets go, holds the removed file, which C cannot find: without
  `file_lock`'s check that the locked file is still the one at the path, B
  and C would build at once.
  """
  folder = str(tmp_path / 'tombstone_letters' / 'config' / '1.0.0')
  lock_path = folder + '.lock'
  names = ('A', 'B', 'C')
  entered = {name: threading.Event() for name in names}
  release = {name: threading.Event() for name in names}
  spans, results, flocked = {}, {}, []
  flock = fcntl.flock

  def recording_flock(fd, operation):
    flocked.append((threading.current_thread().name, os.fstat(fd).st_ino))
    return flock(fd, operation)

  def build(name: str) -> str:
    start = time.monotonic()
    entered[name].set()
    release[name].wait(timeout=60)
    spans[name] = (start, time.monotonic())
    return name

  def run(name: str) -> None:
    results[name] = input_pipeline._built_once(
        folder, functools.partial(build, name))

  monkeypatch.setattr(fcntl, 'flock', recording_flock)
  threads = {name: threading.Thread(target=run, args=(name,), name=name,
                                    daemon=True)
             for name in names}
  threads['A'].start()
  _wait_until(entered['A'].is_set, 'A builds')
  removed_inode = os.stat(lock_path).st_ino
  threads['B'].start()
  _wait_until(lambda: ('B', removed_inode) in flocked, 'B waits')
  os.remove(lock_path)
  release['A'].set()
  _wait_until(entered['B'].is_set, 'B builds')
  threads['C'].start()
  _wait_until(lambda: any(name == 'C' for name, _ in flocked), 'C locks')
  entered['C'].wait(timeout=0.5)  # Time to enter, were it let in.
  release['B'].set()
  release['C'].set()
  for thread in threads.values():
    thread.join(timeout=60)

  assert results == {name: name for name in names}
  order = sorted(names, key=lambda name: spans[name][0])
  assert order == ['A', 'B', 'C']
  for before, after in zip(order, order[1:]):
    assert spans[before][1] <= spans[after][0], f'{before} and {after} overlap'


def test_data_dir_that_is_a_file_is_one_input_error(tmp_path):
  data_dir = tmp_path / 'data'
  data_dir.write_text('not a folder')

  with pytest.raises(errors.InputError) as raised:
    input_pipeline.Pipeline(_config(data_dir), NUM_DEVICES)

  message = str(raised.value)
  assert message == (
      f'cannot create the dataset lock file {_folder(data_dir)}.lock (Not a '
      'directory); data_dir must be a writable folder')
  assert data_dir.read_text() == 'not a folder'
