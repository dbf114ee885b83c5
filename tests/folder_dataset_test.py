"""Tests of importing a DIGITS-style folder of images as a dataset."""

import contextlib
import errno
import io
import logging
import os
import pathlib
import re
import threading
import time
from typing import Iterator

import numpy as np
from PIL import Image
from PIL import ImageFile
import pytest

from configs import default
from lettercnn import errors
from lettercnn.data import folder_dataset

SIZE = 8  # image_size of the tests: tiny, so tests stay fast.


def _config(dataset: pathlib.Path, data_dir: pathlib.Path, **overrides):
  config = default.get_config()
  config.dataset = str(dataset)
  config.data_dir = str(data_dir)
  config.image_size = SIZE
  config.update(overrides)
  return config


def _save(path: pathlib.Path, image: Image.Image, **params) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path, **params)
  return path


def _grey(value: int, size=(5, 7)) -> Image.Image:
  return Image.new('L', size, value)


def _write_letters(root: pathlib.Path, counts: dict[str, int]) -> None:
  """Writes uniform grey PNGs, each of a distinct value, `counts` per class."""
  value = 0
  for name, count in counts.items():
    for i in range(count):
      value += 1
      _save(root / name / f'{i:03d}.png', _grey(value))


def _examples(split) -> list[tuple[int, np.ndarray]]:
  return [(int(ex['label']), ex['image'])
          for ex in split.as_numpy_iterator()]


def _values_by_label(split) -> dict[int, set[int]]:
  """Each label's set of (uniform) image values."""
  values = {}
  for label, image in _examples(split):
    values.setdefault(label, set()).add(int(image[0, 0, 0]))
  return values


def _leftovers(data_dir: pathlib.Path) -> list[str]:
  """Files under data_dir that are not completed datasets."""
  return sorted(
      str(p) for p in data_dir.rglob('*')
      if p.is_file() and (p.name.startswith('.') or p.suffix != '.npz'))


@pytest.fixture(name='mixed_folder')
def fixture_mixed_folder(tmp_path: pathlib.Path) -> pathlib.Path:
  """Three classes of images in many formats, modes and sizes."""
  root = tmp_path / 'mixed'
  rgba = Image.new('RGBA', (9, 4), (255, 0, 0, 128))
  palette = Image.new('RGB', (6, 6), (0, 0, 255)).convert('P')
  sixteen = Image.fromarray(np.full((3, 11), 40000, np.uint16))
  _save(root / 'alpha' / 'grey.png', _grey(10))
  _save(root / 'alpha' / 'rgba.png', rgba)
  _save(root / 'alpha' / 'sub' / 'photo.JPG',
        Image.new('RGB', (20, 10), (0, 128, 0)), quality=95)
  _save(root / 'beta' / 'bitmap.bmp', Image.new('RGB', (4, 4), (1, 2, 3)))
  _save(root / 'beta' / 'palette.gif', palette)
  _save(root / 'beta' / 'deep.png', sixteen)
  _save(root / 'gamma' / 'scan.tiff', Image.new('RGB', (30, 2), 200))
  _save(root / 'gamma' / 'deep.tif', sixteen)
  _save(root / 'gamma' / 'bilevel.png', Image.new('1', (5, 5), 1))
  _save(root / 'gamma' / 'web.webp', Image.new('RGB', (7, 3), 50))
  _save(root / 'gamma' / 'grey_alpha.png', Image.new('LA', (3, 3), (90, 0)))
  return root


@pytest.mark.parametrize('grayscale, channels', [(True, 1), (False, 3)])
def test_mixed_formats_load_at_image_size(mixed_folder, tmp_path, grayscale,
                                          channels):
  result = folder_dataset.load_folder_splits(
      _config(mixed_folder, tmp_path / 'data', grayscale=grayscale))

  assert result.class_names == ('alpha', 'beta', 'gamma')
  assert (result.num_train, result.num_validation) == (8, 3)
  examples = _examples(result.train) + _examples(result.validation)
  assert len(examples) == 11
  assert sorted(label for label, _ in examples) == [0] * 3 + [1] * 3 + [2] * 5
  for _, image in examples:
    assert image.shape == (SIZE, SIZE, channels)
    assert image.dtype == np.uint8


def test_pixel_conversions(tmp_path):
  root = tmp_path / 'pixels'
  # 16-bit values are scaled by 257, not clipped at 255.
  for value in (257 * 10, 257 * 200):
    _save(root / 'deep' / f'{value}.png',
          Image.fromarray(np.full((4, 4), value, np.uint16)))
  # Transparent pixels come out white; a GIF's palette is applied.
  _save(root / 'see_through' / 'clear.png',
        Image.new('RGBA', (4, 4), (0, 0, 0, 0)))
  _save(root / 'see_through' / 'clear.gif',
        Image.new('P', (4, 4), 0), transparency=0)
  _save(root / 'solid' / 'red.png', Image.new('RGBA', (4, 4), (255, 0, 0, 255)))
  _save(root / 'solid' / 'red.gif',
        Image.new('RGB', (4, 4), (255, 0, 0)).convert('P'))

  grey = folder_dataset.load_folder_splits(
      _config(root, tmp_path / 'data', validation_fraction=0.5))
  colour = folder_dataset.load_folder_splits(
      _config(root, tmp_path / 'data', validation_fraction=0.5,
              grayscale=False))

  grey_values = _values_by_label(grey.train)
  for label, values in _values_by_label(grey.validation).items():
    grey_values[label] |= values
  # Pillow's luma of pure red: 0.299 * 255.
  assert grey_values == {0: {10, 200}, 1: {255}, 2: {76}}
  for label, image in _examples(colour.train) + _examples(colour.validation):
    expected = {0: None, 1: (255, 255, 255), 2: (255, 0, 0)}[label]
    if expected is not None:
      np.testing.assert_array_equal(image[0, 0], expected)


def test_split_is_stratified_disjoint_and_seeded_by_dataset_seed(tmp_path):
  root = tmp_path / 'letters'
  _write_letters(root, {'a': 4, 'b': 8, 'c': 3, 'd': 10})
  config = _config(root, tmp_path / 'data')

  result = folder_dataset.load_folder_splits(config)

  train, validation = (_values_by_label(result.train),
                       _values_by_label(result.validation))
  # round(n / 4), at least one image on each side.
  assert {k: len(v) for k, v in validation.items()} == {0: 1, 1: 2, 2: 1, 3: 2}
  assert {k: len(v) for k, v in train.items()} == {0: 3, 1: 6, 2: 2, 3: 8}
  assert (result.num_train, result.num_validation) == (19, 6)
  for label in range(4):
    assert not train[label] & validation[label]
  all_values = set().union(*train.values(), *validation.values())
  assert all_values == set(range(1, 26))

  again = folder_dataset.load_folder_splits(
      _config(root, tmp_path / 'other_data'))
  other_training_seed = folder_dataset.load_folder_splits(
      _config(root, tmp_path / 'data', seed=1))
  other_data_seed = folder_dataset.load_folder_splits(
      _config(root, tmp_path / 'data', dataset_seed=1))
  assert _values_by_label(again.validation) == validation
  assert [int(e['label']) for e in again.train.as_numpy_iterator()] == [
      int(e['label']) for e in result.train.as_numpy_iterator()]
  assert _values_by_label(other_training_seed.validation) == validation
  assert _values_by_label(other_data_seed.validation) != validation


def test_separate_validation_folder(tmp_path):
  _write_letters(tmp_path / 'train', {'x': 3, 'y': 2})
  _write_letters(tmp_path / 'val', {'x': 1, 'y': 2})

  result = folder_dataset.load_folder_splits(
      _config(tmp_path / 'train', tmp_path / 'data',
              validation_dataset=str(tmp_path / 'val')))

  assert result.class_names == ('x', 'y')
  assert (result.num_train, result.num_validation) == (5, 3)
  assert _values_by_label(result.validation) == {0: {1}, 1: {2, 3}}
  assert _values_by_label(result.train) == {0: {1, 2, 3}, 1: {4, 5}}


def test_second_load_reads_cache(tmp_path, monkeypatch):
  root = tmp_path / 'letters'
  _write_letters(root, {'a': 3, 'b': 3})
  data_dir = tmp_path / 'data'
  first = folder_dataset.load_folder_splits(_config(root, data_dir))
  cached = list((data_dir / folder_dataset.CACHE_SUBDIR).iterdir())
  assert [p.suffix for p in cached] == ['.npz']
  assert cached[0].name.startswith('letters-')

  def fail(*unused_args):
    raise AssertionError('decoded an image despite the cache')

  with monkeypatch.context() as patch:
    patch.setattr(folder_dataset, 'decode_image', fail)
    second = folder_dataset.load_folder_splits(_config(root, data_dir))
  assert second.class_names == first.class_names
  np.testing.assert_array_equal(
      [e['image'] for e in second.train.as_numpy_iterator()],
      [e['image'] for e in first.train.as_numpy_iterator()])

  # A changed image or a changed field builds a new dataset.
  _save(root / 'a' / '000.png', _grey(99))
  changed = folder_dataset.load_folder_splits(_config(root, data_dir))
  folder_dataset.load_folder_splits(_config(root, data_dir, image_size=4))
  assert len(list((data_dir / folder_dataset.CACHE_SUBDIR).iterdir())) == 3
  values = _values_by_label(changed.train)
  values[0] |= _values_by_label(changed.validation)[0]
  assert 99 in values[0]


def _truncated_png() -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(
      np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8)).save(
          buffer, 'PNG')
  return buffer.getvalue()[:-60]


def _missing(root: pathlib.Path) -> pathlib.Path:
  return root / 'nowhere'


def _a_file(root: pathlib.Path) -> pathlib.Path:
  _save(root / 'image.png', _grey(1))
  return root / 'image.png'


def _one_class(root: pathlib.Path) -> pathlib.Path:
  _write_letters(root, {'only': 3})
  return root


def _empty_class(root: pathlib.Path) -> pathlib.Path:
  _write_letters(root, {'a': 3, 'b': 3})
  (root / 'empty').mkdir()
  (root / 'empty' / 'notes.txt').write_text('no images here')
  return root / 'empty'


def _truncated(root: pathlib.Path) -> pathlib.Path:
  _write_letters(root, {'a': 3, 'b': 3})
  (root / 'b' / 'cut.png').write_bytes(_truncated_png())
  return root / 'b' / 'cut.png'


def _not_really_a_jpeg(root: pathlib.Path) -> pathlib.Path:
  _write_letters(root, {'a': 3, 'b': 3})
  (root / 'a' / 'fake.jpg').write_text('hello')
  return root / 'a' / 'fake.jpg'


def _single_image_class(root: pathlib.Path) -> pathlib.Path:
  _write_letters(root, {'a': 3, 'lonely': 1})
  return root / 'lonely'


@pytest.mark.parametrize('make_bad_input', [
    _missing, _a_file, _one_class, _empty_class, _truncated,
    _not_really_a_jpeg, _single_image_class
])
def test_bad_input_names_path_and_writes_nothing(tmp_path, make_bad_input):
  root = tmp_path / 'images'
  root.mkdir()
  bad_path = make_bad_input(root)
  data_dir = tmp_path / 'data'
  dataset = bad_path if make_bad_input in (_missing, _a_file) else root

  with pytest.raises(errors.InputError,
                     match=re.escape(str(bad_path))) as raised:
    folder_dataset.load_folder_splits(_config(dataset, data_dir))

  assert '\n' not in str(raised.value)
  assert _leftovers(data_dir) == []
  assert not list(data_dir.rglob('*.npz'))


def test_bad_validation_folder(tmp_path):
  _write_letters(tmp_path / 'train', {'a': 2, 'b': 2})
  _write_letters(tmp_path / 'val', {'a': 1, 'c': 1})
  _write_letters(tmp_path / 'val_empty', {'a': 1})
  (tmp_path / 'val_empty' / 'b').mkdir()

  for validation, bad_path in [
      (tmp_path / 'val', tmp_path / 'val'),
      (tmp_path / 'missing', tmp_path / 'missing'),
      (tmp_path / 'val_empty', tmp_path / 'val_empty' / 'b'),
  ]:
    with pytest.raises(errors.InputError, match=re.escape(str(bad_path))):
      folder_dataset.load_folder_splits(
          _config(tmp_path / 'train', tmp_path / 'data',
                  validation_dataset=str(validation)))
  assert not (tmp_path / 'data').exists()


def test_truncated_image_is_an_error_even_if_pillow_allows_truncation(
    tmp_path, monkeypatch):
  monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', True)
  root = tmp_path / 'images'
  bad_path = _truncated(root)

  with pytest.raises(errors.InputError, match=re.escape(str(bad_path))):
    folder_dataset.load_folder_splits(_config(root, tmp_path / 'data'))
  assert ImageFile.LOAD_TRUNCATED_IMAGES


def test_corrupt_images_skipped_when_asked(tmp_path, caplog):
  root = tmp_path / 'images'
  _truncated(root)
  _not_really_a_jpeg(root)
  caplog.set_level(logging.WARNING)

  result = folder_dataset.load_folder_splits(
      _config(root, tmp_path / 'data', skip_corrupt_images=True))

  assert result.num_train + result.num_validation == 6
  assert 'Skipped 2 corrupt or unreadable image(s)' in caplog.text


def test_class_of_only_corrupt_images_is_an_error(tmp_path):
  root = tmp_path / 'images'
  _write_letters(root, {'a': 2})
  (root / 'b').mkdir()
  (root / 'b' / 'fake.png').write_text('not a png')

  with pytest.raises(errors.InputError, match=re.escape(str(root / 'b'))):
    folder_dataset.load_folder_splits(
        _config(root, tmp_path / 'data', skip_corrupt_images=True))


def test_non_images_skipped_and_counted(tmp_path, caplog):
  root = tmp_path / 'images'
  _write_letters(root, {'a': 2, 'b': 2})
  (root / 'a' / 'notes.txt').write_text('hi')
  (root / 'b' / '.DS_Store').write_bytes(b'\0\1')
  (root / 'b' / '._000.png').write_bytes(b'\0\1')  # A macOS resource fork.
  caplog.set_level(logging.WARNING)

  result = folder_dataset.load_folder_splits(_config(root, tmp_path / 'data'))

  assert result.num_train + result.num_validation == 4
  assert caplog.text.count('that are not images') == 1
  assert 'Skipped 3 file(s)' in caplog.text


def test_build_after_failed_build_succeeds(tmp_path):
  root = tmp_path / 'images'
  bad_path = _truncated(root)
  data_dir = tmp_path / 'data'
  _write_letters(tmp_path / 'good', {'a': 2, 'b': 2})
  folder_dataset.load_folder_splits(_config(tmp_path / 'good', data_dir))

  with pytest.raises(errors.InputError):
    folder_dataset.load_folder_splits(_config(root, data_dir))
  assert len(list(data_dir.rglob('*.npz'))) == 1

  _save(bad_path, _grey(77))
  result = folder_dataset.load_folder_splits(_config(root, data_dir))
  assert result.num_train + result.num_validation == 7
  assert _leftovers(data_dir) == []


def test_failed_write_leaves_nothing_and_stale_temp_files_go(
    tmp_path, monkeypatch):
  root = tmp_path / 'images'
  _write_letters(root, {'a': 2, 'b': 2})
  data_dir = tmp_path / 'data'
  cache_dir = data_dir / folder_dataset.CACHE_SUBDIR
  cache_dir.mkdir(parents=True)
  stale = cache_dir / '.tmp-killed.npz'
  stale.write_bytes(b'half')
  an_hour_ago = time.time() - 3600
  os.utime(stale, (an_hour_ago, an_hour_ago))
  # A concurrent build's file, still being written: it must be left alone.
  in_progress = cache_dir / '.tmp-concurrent.npz'
  in_progress.write_bytes(b'half')

  def disk_full(file, **unused_arrays):
    file.write(b'partial')
    raise OSError('No space left on device')

  with monkeypatch.context() as patch:
    patch.setattr(np, 'savez', disk_full)
    with pytest.raises(OSError, match='No space left'):
      folder_dataset.load_folder_splits(_config(root, data_dir))
  assert list(cache_dir.iterdir()) == [in_progress]

  in_progress.unlink()
  folder_dataset.load_folder_splits(_config(root, data_dir))
  assert [p.suffix for p in cache_dir.iterdir()] == ['.npz']
  assert _leftovers(data_dir) == []


@pytest.mark.parametrize('fraction', [0.0, 1.0])
def test_unsplittable_validation_fraction(tmp_path, fraction):
  _write_letters(tmp_path / 'images', {'a': 2, 'b': 2})

  with pytest.raises(errors.InputError, match='validation_fraction'):
    folder_dataset.load_folder_splits(
        _config(tmp_path / 'images', tmp_path / 'data',
                validation_fraction=fraction))


@contextlib.contextmanager
def _readers_unblocked(fifo: pathlib.Path) -> Iterator[None]:
  """Gives whoever opens `fifo` to read an empty stream instead of a hang.

  Opening a FIFO waits for a writer; this opens and closes its write end
  whenever a reader waits, so code that reads the FIFO fails instead of hanging
  the test.
  """
  done = threading.Event()

  def write_nothing():
    while not done.wait(0.05):
      try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
      except OSError as e:  # ENXIO: no reader yet.
        if e.errno != errno.ENXIO:
          raise

  writer = threading.Thread(target=write_nothing, daemon=True)
  writer.start()
  try:
    yield
  finally:
    done.set()
    writer.join()


def test_fifos_and_broken_symlinks_skipped_and_counted(tmp_path, caplog):
  root = tmp_path / 'images'
  _write_letters(root, {'a': 2, 'b': 2})
  _save(tmp_path / 'elsewhere' / 'real.png', _grey(200))
  (root / 'a' / 'link.png').symlink_to(tmp_path / 'elsewhere' / 'real.png')
  fifo = root / 'a' / 'x.png'
  os.mkfifo(fifo)
  (root / 'b' / 'gone.png').symlink_to(tmp_path / 'missing.png')
  caplog.set_level(logging.WARNING)

  with _readers_unblocked(fifo):
    result = folder_dataset.load_folder_splits(
        _config(root, tmp_path / 'data'))

  assert result.num_train + result.num_validation == 5
  values = _values_by_label(result.train)
  for label, more in _values_by_label(result.validation).items():
    values[label] |= more
  assert values == {0: {1, 2, 200}, 1: {3, 4}}  # The symlinked image counts.
  assert caplog.text.count('that are not regular files') == 1
  assert 'Skipped 2 file(s)' in caplog.text
  assert str(root / 'a' / 'x.png') in caplog.text


def test_class_folder_name_not_utf8_is_an_input_error(tmp_path):
  root = tmp_path / 'images'
  _write_letters(root, {'a': 2})
  bad_class = os.fsencode(root) + b'/\xff'
  os.mkdir(bad_class)
  for i in range(2):
    _grey(i).save(bad_class + b'/%d.png' % i)

  with pytest.raises(errors.InputError,
                     match=re.escape(f'{root}/\\xff')) as raised:
    folder_dataset.load_folder_splits(_config(root, tmp_path / 'data'))

  message = str(raised.value)
  assert 'not valid UTF-8' in message
  message.encode('utf-8')  # Printable: no lone surrogates.
  assert '\n' not in message
  assert not (tmp_path / 'data').exists()


@pytest.mark.parametrize('corruption', ['truncated', 'garbage'])
def test_unreadable_cache_is_rebuilt(tmp_path, monkeypatch, caplog,
                                     corruption):
  root = tmp_path / 'letters'
  _write_letters(root, {'a': 3, 'b': 3})
  data_dir = tmp_path / 'data'
  first = folder_dataset.load_folder_splits(_config(root, data_dir))
  (cached,) = (data_dir / folder_dataset.CACHE_SUBDIR).iterdir()
  if corruption == 'truncated':
    cached.write_bytes(cached.read_bytes()[:-100])
  else:
    cached.write_bytes(b'not a zip file' * 20)
  decoded = []
  decode = folder_dataset.decode_image

  def counting_decode(path, *args):
    decoded.append(path)
    return decode(path, *args)

  monkeypatch.setattr(folder_dataset, 'decode_image', counting_decode)
  caplog.set_level(logging.WARNING)

  second = folder_dataset.load_folder_splits(_config(root, data_dir))

  assert len(decoded) == 6
  assert 'Rebuilding the unreadable cached folder dataset' in caplog.text
  assert str(cached) in caplog.text
  assert second.class_names == first.class_names
  for split in ('train', 'validation'):
    labels, images = zip(*_examples(getattr(first, split)))
    again_labels, again_images = zip(*_examples(getattr(second, split)))
    assert again_labels == labels
    np.testing.assert_array_equal(again_images, images)
  with np.load(cached) as rebuilt:
    np.testing.assert_array_equal(rebuilt['class_names'], ['a', 'b'])
  assert list(cached.parent.iterdir()) == [cached]
  assert _leftovers(data_dir) == []


def _restore_times(path: pathlib.Path, stat: os.stat_result) -> None:
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_cache_is_keyed_on_content_not_names_sizes_or_times(
    tmp_path, monkeypatch, caplog):
  root = tmp_path / 'letters'
  _write_letters(root, {'a': 2, 'b': 2})
  data_dir = tmp_path / 'data'
  folder_dataset.load_folder_splits(_config(root, data_dir))
  caplog.set_level(logging.INFO)

  # Unchanged content, touched times: the cache is used, nothing decoded.
  for path in root.rglob('*.png'):
    os.utime(path, (1, 1))

  def fail(*unused_args):
    raise AssertionError('decoded an image despite the cache')

  with monkeypatch.context() as patch:
    patch.setattr(folder_dataset, 'decode_image', fail)
    folder_dataset.load_folder_splits(_config(root, data_dir))
  assert 'Using cached folder dataset' in caplog.text

  # Swap two same-size images of different classes and restore their times,
  # as `cp -p`, `rsync -a` and tar do: the cache must not be used.
  first, second = root / 'a' / '000.png', root / 'b' / '000.png'
  stats = first.stat(), second.stat()
  assert stats[0].st_size == stats[1].st_size
  contents = first.read_bytes(), second.read_bytes()
  assert contents[0] != contents[1]
  first.write_bytes(contents[1])
  second.write_bytes(contents[0])
  _restore_times(first, stats[0])
  _restore_times(second, stats[1])
  caplog.clear()

  swapped = folder_dataset.load_folder_splits(_config(root, data_dir))

  assert 'Using cached folder dataset' not in caplog.text
  assert 'Importing image folder' in caplog.text
  values = _values_by_label(swapped.train)
  for label, more in _values_by_label(swapped.validation).items():
    values[label] |= more
  assert values == {0: {3, 2}, 1: {1, 4}}
  assert len(list((data_dir / folder_dataset.CACHE_SUBDIR).iterdir())) == 2


def test_images_behind_a_folder_symlink_count_for_their_class(tmp_path,
                                                              caplog):
  root = tmp_path / 'images'
  _write_letters(root, {'a': 2, 'b': 2})
  _save(tmp_path / 'elsewhere' / 'more' / 'x.png', _grey(200))
  _save(tmp_path / 'elsewhere' / 'more' / 'deeper' / 'y.png', _grey(201))
  (root / 'a' / 'linked').symlink_to(tmp_path / 'elsewhere' / 'more')
  caplog.set_level(logging.WARNING)

  result = folder_dataset.load_folder_splits(_config(root, tmp_path / 'data'))

  assert result.num_train + result.num_validation == 6
  values = _values_by_label(result.train)
  for label, more in _values_by_label(result.validation).items():
    values[label] |= more
  assert values == {0: {1, 2, 200, 201}, 1: {3, 4}}
  assert 'Skipped' not in caplog.text


def _class_linked_to_root(root: pathlib.Path) -> tuple[pathlib.Path, ...]:
  (root / 'loop').symlink_to(root)
  return root / 'loop', root


def _folder_linked_to_its_class(root: pathlib.Path) -> tuple[pathlib.Path, ...]:
  (root / 'a' / 'sub').mkdir()
  (root / 'a' / 'sub' / 'up').symlink_to(root / 'a')
  return root / 'a' / 'sub' / 'up', root / 'a'


def _class_linked_to_class(root: pathlib.Path) -> tuple[pathlib.Path, ...]:
  (root / 'c').symlink_to(root / 'a')
  return root / 'c', root / 'a'


def _image_under_two_classes(root: pathlib.Path) -> tuple[pathlib.Path, ...]:
  (root / 'b' / 'copy.png').symlink_to(root / 'a' / '000.png')
  return root / 'b' / 'copy.png', root / 'a' / '000.png'


def _image_twice_in_a_class(root: pathlib.Path) -> tuple[pathlib.Path, ...]:
  (root / 'a' / 'again.png').symlink_to('000.png')
  return root / 'a' / 'again.png', root / 'a' / '000.png'


_REFUSAL = {
    _class_linked_to_root: 'Symlink cycle',
    _folder_linked_to_its_class: 'Symlink cycle',
    _class_linked_to_class: 'reached again through a symlink',
    _image_under_two_classes: 'is the same file as',
    _image_twice_in_a_class: 'is the same file as',
}


@pytest.mark.parametrize('make_link', list(_REFUSAL))
def test_symlink_cycles_and_images_reached_twice_are_refused(
    tmp_path, monkeypatch, make_link):
  root = tmp_path / 'images'
  _write_letters(root, {'a': 2, 'b': 2})
  paths = make_link(root)
  data_dir = tmp_path / 'data'

  def fail(*unused_args):
    raise AssertionError('decoded an image despite the bad folder')

  monkeypatch.setattr(folder_dataset, 'decode_image', fail)
  with pytest.raises(errors.InputError) as raised:
    folder_dataset.load_folder_splits(_config(root, data_dir))

  message = str(raised.value)
  assert _REFUSAL[make_link] in message
  for path in paths:  # Named whole, not as the prefix of a longer path.
    assert re.search(re.escape(str(path)) + '[ ,;.]', message), path
  assert '\n' not in message
  assert not data_dir.exists()


def test_unreadable_folder_is_an_input_error(tmp_path, monkeypatch):
  root = tmp_path / 'images'
  _write_letters(root, {'a': 2, 'b': 2})
  (root / 'b' / 'locked').mkdir()
  scandir = os.scandir

  def denied(path):
    if os.fspath(path) == str(root / 'b' / 'locked'):
      raise PermissionError(errno.EACCES, 'Permission denied', path)
    return scandir(path)

  monkeypatch.setattr(os, 'scandir', denied)
  with pytest.raises(errors.InputError,
                     match=re.escape(str(root / 'b' / 'locked'))):
    folder_dataset.load_folder_splits(_config(root, tmp_path / 'data'))
  assert not (tmp_path / 'data').exists()


def test_looping_file_symlink_is_skipped_as_not_regular(tmp_path, caplog):
  root = tmp_path / 'images'
  _write_letters(root, {'a': 2, 'b': 2})
  (root / 'a' / 'self.png').symlink_to('self.png')
  (root / 'self').symlink_to('self')  # Beside the classes: no class.
  caplog.set_level(logging.WARNING)

  result = folder_dataset.load_folder_splits(_config(root, tmp_path / 'data'))

  assert result.num_train + result.num_validation == 4
  assert 'Skipped 1 file(s)' in caplog.text
  assert str(root / 'a' / 'self.png') in caplog.text
