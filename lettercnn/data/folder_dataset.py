"""Imports a user's folder of images as a dataset, the way NVIDIA DIGITS does.

Layout: one subfolder per class, named by the class; images may sit anywhere
below their class folder. Class names are the sorted subfolder names (hidden
ones, starting with '.', are ignored). Files are images by extension (see
IMAGE_EXTENSIONS); other files (notes.txt, .DS_Store) are skipped and counted.

Files that are not regular files (FIFOs, sockets, devices, broken symlinks)
are skipped and counted too. Symlinks to images and to folders are followed;
a symlink cycle, or a real folder or image reached twice (under two classes,
or twice in one), is refused in one line naming both paths before anything
is decoded. Class folder names must be valid UTF-8, as they are stored as
text.

Every image is decoded strictly with Pillow, converted to grey or RGB and
squashed (not cropped) to image_size x image_size with bilinear filtering, as
DIGITS' "squash" resize does. Conversions:
  * transparency (RGBA, LA, palette or colour-key transparency) is composited
    on white, as DIGITS does, so transparent backgrounds read as paper;
  * 16-bit and 32-bit integer grey (Pillow modes I;16*, I) are taken as
    0..65535 and scaled to 0..255 by dividing by 257 (65535 -> 255), not
    clipped; 16-bit colour PNGs are reduced to 8 bits by Pillow itself;
  * everything else (1-bit, palette, CMYK, YCbCr, float...) uses Pillow's
    conversion.

The decoded splits are cached as one .npz file,
`<data_dir>/lettercnn_folders/<folder name>-<key>.npz`, where the key hashes
the folders' image files (their paths and the SHA-256 of their bytes) and the
config fields that shape the result, so a second load decodes nothing and any
change to the images' contents or those fields builds a new file. All checking and decoding
happens before anything is written, and the file is written under a temporary
name and renamed into place, so a failed or killed build never leaves a
dataset that looks complete. An unreadable cache file (truncated, overwritten)
is rebuilt.
"""

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from typing import Callable, Iterator, Optional, Sequence
import zlib

from absl import logging
import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageFile
import tensorflow as tf

from lettercnn import errors
from lettercnn import files
from lettercnn.data import splits

IMAGE_EXTENSIONS = ('.bmp', '.dib', '.gif', '.jfif', '.jpe', '.jpeg', '.jpg',
                    '.pbm', '.pgm', '.png', '.pnm', '.ppm', '.tga', '.tif',
                    '.tiff', '.webp')
CACHE_SUBDIR = 'lettercnn_folders'

# Bump when decoding or the file format changes, to invalidate old caches.
_CACHE_VERSION = 2
_TEMP_PREFIX = '.tmp-'
# A temporary file untouched this long belongs to a killed build, not to a
# concurrent one still writing (e.g. several learning rates started at once).
_STALE_TEMP_SECONDS = 600
# Files hashed per thread-pool task: enough to amortise the task's overhead.
_HASH_BATCH = 64
_INTEGER_GREY_MODES = ('I', 'I;16', 'I;16L', 'I;16B', 'I;16N')
_ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')
_GREY_MODES = ('1', 'L', 'LA', 'La', 'F') + _INTEGER_GREY_MODES
_CACHE_KEYS = ('train_images', 'train_labels', 'validation_images',
               'validation_labels', 'class_names')

# Class name -> that class's decoded images.
_ImagesByClass = dict[str, list[np.ndarray]]


@dataclasses.dataclass(frozen=True)
class _Folder:
  """The image files of one user folder, by class."""
  root: str  # Absolute path.
  images: dict[str, list[str]]  # Class name -> sorted absolute image paths.

  def class_dir(self, class_name: str) -> str:
    return os.path.join(self.root, class_name)


def load_folder_splits(config: ml_collections.ConfigDict) -> splits.Splits:
  """Returns the train and validation splits of the folder `config.dataset`.

  Validation images come from `config.validation_dataset` when set, else a
  stratified `config.validation_fraction` of each class (seeded by
  `config.dataset_seed`). The first load decodes and caches; later ones read the cache.

  Raises:
    errors.InputError: a folder, class or image is unusable; the message names
      the path.
  """
  splitting = config.validation_dataset is None
  if splitting:
    _check_validation_fraction(config.validation_fraction, config.dataset)
  train_folder = _list_folder(config.dataset, 'Dataset folder', splitting)
  validation_folder = None
  if not splitting:
    validation_folder = _list_folder(config.validation_dataset,
                                     'Validation folder', splitting=False)
    _check_same_classes(train_folder, validation_folder)

  path = _cache_path(config, train_folder, validation_folder)
  arrays = _read_cache(path)
  if arrays is None:
    arrays = _build(config, train_folder, validation_folder)
    _write_atomically(path, arrays)
  return _to_splits(arrays)


def _list_folder(path: str, what: str, splitting: bool) -> _Folder:
  """Lists the images of `path` by class, checking the layout.

  Args:
    path: the folder, as the user gave it.
    what: how error messages call it, e.g. 'Dataset folder'.
    splitting: whether each class will be split into training and validation.
  """
  root = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(root):
    raise errors.InputError(f'{what} {root} does not exist.')
  if not os.path.isdir(root):
    raise errors.InputError(f'{what} {root} is not a folder.')
  class_names = class_subfolders(root)
  if len(class_names) < 2:
    raise errors.InputError(
        f'{what} {root} has {len(class_names)} class subfolder(s) '
        f'{class_names}; it needs one subfolder of images per class, and at '
        'least two classes.')
  images = {}
  skipped = SkippedFiles()
  reached = ReachedPaths()
  reached.add_root(root)
  for name in class_names:
    check_class_name(os.path.join(root, name))
    images[name] = image_files(os.path.join(root, name), skipped, reached)
  skipped.warn(root)
  folder = _Folder(root=root, images=images)
  _check_class_sizes(folder, _counts(images), splitting, 'images')
  return folder


def class_subfolders(root: str) -> list[str]:
  """The class folders of `root` in DIGITS' layout, sorted; hidden ones out."""
  return sorted(entry.name for entry in os.scandir(root)
                if _is_folder(entry) and not entry.name.startswith('.'))


@dataclasses.dataclass
class SkippedFiles:
  """Files found beside the images and skipped, counted in one warning each."""
  non_images: list[str] = dataclasses.field(default_factory=list)
  not_regular: list[str] = dataclasses.field(default_factory=list)

  def warn(self, root: str) -> None:
    _warn_skipped(self.non_images, root, 'are not images (images need one of '
                  f'the extensions {" ".join(IMAGE_EXTENSIONS)})')
    _warn_skipped(self.not_regular, root, 'are not regular files (FIFOs, '
                  'sockets, devices or broken symlinks)')


@dataclasses.dataclass
class ReachedPaths:
  """The real folders and images one listing reached, each by its first path.

  Symlinks to folders are followed, so a listing refuses what would make an
  image count twice or the walk never end: a symlink cycle, and a real folder
  or image reached a second time (under two classes, or twice in one).
  """
  folders: dict[str, str] = dataclasses.field(default_factory=dict)
  images: dict[str, str] = dataclasses.field(default_factory=dict)
  # Real path -> path of the folders that hold every walk (the dataset root).
  outer: dict[str, str] = dataclasses.field(default_factory=dict)

  def add_root(self, root: str) -> None:
    real = os.path.realpath(root)
    self.folders[real] = root
    self.outer[real] = root

  def add_folder(self, path: str, real: str, ancestors: dict[str, str]) -> None:
    """Records folder `path`; `ancestors` maps the real paths holding it."""
    if real in ancestors:
      raise errors.InputError(
          f'Symlink cycle: {path} leads back to {ancestors[real]}, a folder '
          'that holds it; remove or fix the link.')
    first = self.folders.setdefault(real, path)
    if first != path:
      raise errors.InputError(
          f'Folder {path} is {first} reached again through a symlink; each '
          'image must be reached once, under one class. Remove or fix the '
          'link.')

  def add_image(self, path: str, real: str) -> None:
    first = self.images.setdefault(real, path)
    if first != path:
      raise errors.InputError(
          f'Image {path} is the same file as {first}, reached again through a '
          'symlink; each image must be reached once, under one class. Remove '
          'one of them.')


def image_files(directory: str, skipped: SkippedFiles,
                reached: Optional[ReachedPaths] = None) -> list[str]:
  """The image files below `directory`, sorted; the others go to `skipped`.

  Symlinks to folders and images are followed; hidden subfolders are not.

  Args:
    directory: the folder to list.
    skipped: collects the files that are not listed.
    reached: what the listing of other folders reached, to refuse what this
      one reaches again; by default, only this folder's own paths count.

  Raises:
    errors.InputError: a folder does not read, a symlink cycle, or a folder or
      image reached twice (see `ReachedPaths`).
  """
  reached = ReachedPaths() if reached is None else reached
  real = os.path.realpath(directory)
  reached.add_folder(directory, real, reached.outer)
  images = []
  _walk_images(directory, real, {**reached.outer, real: directory}, reached,
               skipped, images)
  return sorted(images)


def _walk_images(directory: str, real: str, ancestors: dict[str, str],
                 reached: ReachedPaths, skipped: SkippedFiles,
                 images: list[str]) -> None:
  """Adds the images below `directory` (real path `real`) to `images`."""
  try:
    entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
  except OSError as e:
    raise errors.InputError(
        f'Cannot read folder {directory} ({type(e).__name__}: {e.strerror}); '
        'make it readable or remove it.') from None
  for entry in entries:
    # A symlink resolves only through realpath; any other entry's real path
    # is its name in its folder's real path.
    entry_real = (os.path.realpath(entry.path) if entry.is_symlink() else
                  os.path.join(real, entry.name))
    if _is_folder(entry):
      if entry.name.startswith('.'):
        continue
      reached.add_folder(entry.path, entry_real, ancestors)
      _walk_images(entry.path, entry_real,
                   {**ancestors, entry_real: entry.path}, reached, skipped,
                   images)
    elif not is_image_file(entry.path):
      skipped.non_images.append(entry.path)
    # Opening a FIFO would wait for a writer forever.
    elif not os.path.isfile(entry.path):
      skipped.not_regular.append(entry.path)
    else:
      reached.add_image(entry.path, entry_real)
      images.append(entry.path)


def _is_folder(entry: os.DirEntry[str]) -> bool:
  """Whether `entry` is a folder or a symlink to one."""
  try:
    return entry.is_dir()
  except OSError:  # A symlink that loops on itself.
    return False


def check_class_name(class_dir: str) -> None:
  """Refuses a class folder name that is not UTF-8, as class names are text.

  They end up in the cache file, status.json and TensorBoard, none of which
  could hold the raw bytes; the message shows them escaped, e.g. '\\xff'.
  """
  try:
    os.path.basename(class_dir).encode('utf-8')
  except UnicodeEncodeError:
    printable = os.fsencode(class_dir).decode('utf-8', 'backslashreplace')
    raise errors.InputError(
        f'Class folder {printable} has a name that is not valid UTF-8; '
        'rename it, as class names are stored as text.') from None


def _warn_skipped(paths: list[str], root: str, why: str) -> None:
  if paths:
    logging.warning('Skipped %d file(s) under %s that %s, e.g. %s.',
                    len(paths), root, why, paths[0])


def is_image_file(path: str) -> bool:
  # Hidden files include macOS' '._x.png' resource forks, which are no images.
  name = os.path.basename(path)
  return (not name.startswith('.') and
          os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


def _check_validation_fraction(fraction: float, dataset: str) -> None:
  if not 0 < fraction < 1:
    raise errors.InputError(
        f'validation_fraction must be strictly between 0 and 1 to split '
        f'{dataset} into training and validation images; got {fraction}.')


def _check_same_classes(train: _Folder, validation: _Folder) -> None:
  missing = sorted(set(train.images) - set(validation.images))
  extra = sorted(set(validation.images) - set(train.images))
  if missing or extra:
    raise errors.InputError(
        f'Validation folder {validation.root} must have the same class '
        f'subfolders as {train.root}; missing: {missing}, extra: {extra}.')


def _counts(images: dict[str, Sequence[object]]) -> dict[str, int]:
  return {name: len(items) for name, items in images.items()}


def _check_class_sizes(folder: _Folder, counts: dict[str, int],
                       splitting: bool, what: str) -> None:
  """Raises unless every class has images, and two if it must be split."""
  for name, count in counts.items():
    if count == 0:
      raise errors.InputError(
          f'Class folder {folder.class_dir(name)} contains no {what}.')
    if splitting and count < 2:
      raise errors.InputError(
          f'Class folder {folder.class_dir(name)} has too few {what} ({count}) '
          'to split into training and validation; it needs at least 2. Add '
          'images or give a separate validation_dataset folder.')


def _cache_path(config: ml_collections.ConfigDict, train: _Folder,
                validation: Optional[_Folder]) -> str:
  """Returns where the dataset built from these files and fields is cached."""
  key = {
      'version': _CACHE_VERSION,
      'train': _fingerprint(train),
      'validation': _fingerprint(validation) if validation else None,
      'validation_fraction': None if validation else config.validation_fraction,
      'dataset_seed': config.dataset_seed,
      'image_size': config.image_size,
      'grayscale': config.grayscale,
      'skip_corrupt_images': config.skip_corrupt_images,
  }
  digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
  name = re.sub(r'[^\w.-]', '_', os.path.basename(train.root)) or 'folder'
  data_dir = config.data_dir or os.environ.get(
      'TFDS_DATA_DIR', os.path.join('~', 'tensorflow_datasets'))
  return os.path.join(
      os.path.expanduser(data_dir), CACHE_SUBDIR, f'{name}-{digest}.npz')


def _fingerprint(folder: _Folder) -> list[object]:
  """Identifies the folder's images by their paths and contents.

  Contents, not sizes and modification times: copies that keep times (`cp -p`,
  `rsync -a`, tar) can change an image without changing either. Batches of
  files are hashed in threads, so a cold or network disk is read in parallel
  (file reads and hashing release the GIL).
  """
  paths = [p for class_paths in folder.images.values() for p in class_paths]
  batches = [paths[i:i + _HASH_BATCH] for i in range(0, len(paths),
                                                     _HASH_BATCH)]
  with concurrent.futures.ThreadPoolExecutor(
      min(8, os.cpu_count() or 1)) as pool:
    digests = iter([d for batch in pool.map(_content_digests, batches)
                    for d in batch])
  entries = [[name, os.path.relpath(path, folder.root), next(digests)]
             for name, class_paths in folder.images.items()
             for path in class_paths]
  return [folder.root, entries]


def _content_digests(paths: list[str]) -> list[str]:
  """The SHA-256 of each file's bytes, or the error that reading it raised.

  A file that does not read is keyed by its error; decoding then reports or
  skips it as a corrupt image.
  """
  digests = []
  for path in paths:
    try:
      with open(path, 'rb') as f:
        digests.append(hashlib.file_digest(f, 'sha256').hexdigest())
    except OSError as e:
      digests.append(f'unreadable: {type(e).__name__} {e.errno}')
  return digests


def _build(config: ml_collections.ConfigDict, train: _Folder,
           validation: Optional[_Folder]) -> dict[str, np.ndarray]:
  """Decodes and splits the images into the arrays the cache file holds."""
  logging.info('Importing image folder %s (decoded once, then cached).',
               train.root)
  train_images = _decode_folder(train, config)
  if validation is None:
    _check_class_sizes(train, _counts(train_images), True, 'readable images')
    train_images, validation_images = _split(
        train_images, config.validation_fraction, config.dataset_seed)
  else:
    validation_images = _decode_folder(validation, config)
    _check_class_sizes(validation, _counts(validation_images), False,
                       'readable images')
  train_x, train_y = _stack(train_images)
  order = np.random.default_rng(config.dataset_seed).permutation(len(train_y))
  validation_x, validation_y = _stack(validation_images)
  return {
      'train_images': train_x[order],
      'train_labels': train_y[order],
      'validation_images': validation_x,
      'validation_labels': validation_y,
      'class_names': np.array(list(train.images), dtype=str),
  }


def _decode_folder(folder: _Folder,
                   config: ml_collections.ConfigDict) -> _ImagesByClass:
  """Decodes the images of `folder`, less corrupt ones the config skips."""
  paths = [p for class_paths in folder.images.values() for p in class_paths]
  arrays = iter(_decode_files(paths, config))
  decoded = {
      name: [next(arrays) for _ in class_paths]
      for name, class_paths in folder.images.items()
  }
  num_corrupt = sum(a is None for images in decoded.values() for a in images)
  if num_corrupt:
    logging.warning('Skipped %d corrupt or unreadable image(s) under %s.',
                    num_corrupt, folder.root)
  return {
      name: [a for a in images if a is not None]
      for name, images in decoded.items()
  }


def _decode_files(paths: list[str], config: ml_collections.ConfigDict
                  ) -> list[Optional[np.ndarray]]:
  """Decodes `paths` as the config asks; None for a skipped corrupt image."""
  return decode_files(
      paths, lambda path: decode_image(path, config.image_size,
                                       config.grayscale),
      config.skip_corrupt_images, 'set --config.skip_corrupt_images=True')


def decode_files(paths: Sequence[str], decode: Callable[[str], np.ndarray],
                 skip_corrupt: bool, skip_hint: str
                 ) -> list[Optional[np.ndarray]]:
  """`decode` of each path, in threads; None stands for a skipped corrupt image.

  Raises errors.InputError at the first corrupt image (in `paths` order)
  unless `skip_corrupt`; `skip_hint` says how to skip them instead.
  """

  def decode_or_none(path: str) -> Optional[np.ndarray]:
    try:
      return decode(path)
    # Pillow's format plugins raise many exception types on malformed input.
    except Exception as e:  # pylint: disable=broad-except
      if not skip_corrupt:
        detail = ' '.join(f'{type(e).__name__}: {e}'.split())
        raise errors.InputError(
            f'Corrupt or unreadable image {path} ({detail}); fix or remove it, '
            f'or {skip_hint} to skip such images.') from e
      logging.debug('Skipping corrupt image %s: %s', path, e)
      return None

  pool = concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1))
  try:
    with _strict_truncation():
      return list(pool.map(decode_or_none, paths))
  finally:
    # On an error, don't wait for the images still queued.
    pool.shutdown(cancel_futures=True)


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
  """Makes Pillow raise on truncated files instead of padding them silently."""
  saved = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = False
  try:
    yield
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = saved


def decode_image(path: str, image_size: int, grayscale: bool) -> np.ndarray:
  """Returns the image at `path` as uint8 [image_size, image_size, 1 or 3]."""
  converted = _open_converted(path, grayscale)
  resized = converted.resize((image_size, image_size),
                             Image.Resampling.BILINEAR)
  return _as_hwc(resized)


def decode_stored(path: str) -> np.ndarray:
  """The image at `path` as uint8 [H, W, 1 or 3] at its own size.

  One channel for grey images, three for all others, converted as
  `decode_image` converts them: the pixels a TFDS image feature holds, which
  the input pipeline converts and resizes itself.
  """
  return _as_hwc(_open_converted(path, None))


def _open_converted(path: str, grayscale: Optional[bool]) -> Image.Image:
  """The image at `path` in 'L' or 'RGB'; None keeps grey images grey."""
  with Image.open(path) as image:
    image.load()
    if grayscale is None:
      grayscale = image.mode in _GREY_MODES
    return _convert(image, 'L' if grayscale else 'RGB')


def _as_hwc(image: Image.Image) -> np.ndarray:
  array = np.asarray(image, dtype=np.uint8)
  return array[:, :, np.newaxis] if array.ndim == 2 else array


def _convert(image: Image.Image, mode: str) -> Image.Image:
  """Converts any Pillow mode to `mode` ('L' or 'RGB'); see module docstring."""
  if image.mode in _INTEGER_GREY_MODES:
    values = np.asarray(image).astype(np.float64)
    image = Image.fromarray(
        np.clip(np.round(values / 257), 0, 255).astype(np.uint8))
  elif image.mode in _ALPHA_MODES or 'transparency' in image.info:
    rgba = image.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    image = Image.alpha_composite(white, rgba)
  return image.convert(mode)


def _split(images: _ImagesByClass, fraction: float,
           seed: int) -> tuple[_ImagesByClass, _ImagesByClass]:
  """Splits each class by `fraction`, at least one image to each side.

  Each class is permuted by its own generator, seeded by `seed` and the class
  name, so adding or removing a class leaves the other classes' splits alone.
  """
  train, validation = {}, {}
  for name, arrays in images.items():
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    order = rng.permutation(len(arrays))
    num_validation = min(max(round(len(arrays) * fraction), 1), len(arrays) - 1)
    validation[name] = [arrays[i] for i in order[:num_validation]]
    train[name] = [arrays[i] for i in order[num_validation:]]
  return train, validation


def _stack(images: _ImagesByClass) -> tuple[np.ndarray, np.ndarray]:
  """Returns all images as one uint8 array and their int64 class indices."""
  x = np.stack([a for arrays in images.values() for a in arrays])
  y = np.concatenate([
      np.full(len(arrays), label, np.int64)
      for label, arrays in enumerate(images.values())
  ])
  return x, y


def _read_cache(path: str) -> Optional[dict[str, np.ndarray]]:
  """The arrays cached at `path`, or None if there is no readable cache file.

  A cache file that cannot be read whole (truncated, overwritten) is logged
  and left to be rebuilt: it holds nothing that the images do not.
  """
  try:
    with np.load(path, allow_pickle=False) as cached:
      arrays = {key: cached[key] for key in _CACHE_KEYS}
  except FileNotFoundError:
    return None
  # numpy and zipfile raise many exception types on malformed files.
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('Rebuilding the unreadable cached folder dataset %s (%s).',
                    path, ' '.join(f'{type(e).__name__}: {e}'.split()))
    return None
  logging.info('Using cached folder dataset %s.', path)
  return arrays


def _write_atomically(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Writes `arrays` to `path` through a temporary file, renamed when done."""
  directory = os.path.dirname(path)
  os.makedirs(directory, exist_ok=True)
  _remove_stale_temp_files(directory)
  # A name of its own: concurrent builds of the same cache write side by side.
  fd, temp_path = tempfile.mkstemp(
      dir=directory, prefix=_TEMP_PREFIX, suffix='.npz')
  with files.atomic_path(path, temp_path):
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(temp_path, 0o644)  # mkstemp makes it private to the builder.
  logging.info('Cached %d training and %d validation images of %d classes in '
               '%s.', len(arrays['train_labels']),
               len(arrays['validation_labels']), len(arrays['class_names']),
               path)


def _remove_stale_temp_files(directory: str) -> None:
  """Removes temporary files that killed builds left behind."""
  now = time.time()
  for entry in os.scandir(directory):
    if not entry.name.startswith(_TEMP_PREFIX):
      continue
    # Another build may remove or rename the file under us.
    with contextlib.suppress(FileNotFoundError):
      if now - entry.stat().st_mtime > _STALE_TEMP_SECONDS:
        logging.info('Removing stale temporary file %s.', entry.path)
        os.remove(entry.path)


def _to_splits(arrays: dict[str, np.ndarray]) -> splits.Splits:
  """Wraps the cached arrays as tf.data datasets."""

  def dataset(split: str) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices({
        'image': arrays[f'{split}_images'],
        'label': arrays[f'{split}_labels'],
    })

  return splits.Splits(
      train=dataset('train'),
      validation=dataset('validation'),
      num_train=len(arrays['train_labels']),
      num_validation=len(arrays['validation_labels']),
      class_names=tuple(str(name) for name in arrays['class_names']),
  )
