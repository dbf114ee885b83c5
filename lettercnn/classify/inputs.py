"""The images a classify command names, listed and then decoded as training did.

Each PATH is an image file or a folder. A folder with subfolders is labelled,
in DIGITS' layout (`folder_dataset`): each subfolder is a class, and the
images anywhere below it are of that class. Images directly in a labelled
folder, in a folder without subfolders, or named one by one have no label.

Decoding reproduces training's input exactly (`run_inputs.RunInputs`): the
run's own decoder, then `input_pipeline.preprocess` (grey or colour, squashed
to image_size), then the training mean, if the run subtracted one.
"""

import collections
import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from lettercnn import errors
from lettercnn.data import folder_dataset
from lettercnn.data import input_pipeline
from lettercnn.run import inputs as run_inputs


@dataclasses.dataclass(frozen=True)
class ImageFile:
  """One image to classify; `true_class` is None when it has no label."""
  path: str
  true_class: str | None


def _folder_images(root: str,
                   skipped: folder_dataset.SkippedFiles) -> list[ImageFile]:
  class_names = folder_dataset.class_subfolders(root)
  loose = [ImageFile(path, None) for path in sorted(
      os.path.join(root, entry.name) for entry in os.scandir(root)
      if entry.is_file() and folder_dataset.is_image_file(entry.path))]
  if not class_names:
    return [ImageFile(path, None)
            for path in folder_dataset.image_files(root, skipped)]
  labelled = []
  for name in class_names:
    folder_dataset.check_class_name(os.path.join(root, name))
    labelled += [ImageFile(path, name) for path in folder_dataset.image_files(
        os.path.join(root, name), skipped)]
  return loose + labelled


def _file_image(path: str) -> ImageFile:
  if not folder_dataset.is_image_file(path):
    raise errors.InputError(
        f'{path} is not an image file (images need one of the extensions '
        f'{" ".join(folder_dataset.IMAGE_EXTENSIONS)})')
  if not os.path.isfile(path):  # Opening a FIFO would wait forever.
    raise errors.InputError(f'{path} is not a regular file')
  return ImageFile(path, None)


def _check_classes(images: Sequence[ImageFile], paths: Sequence[str],
                   class_names: Sequence[str]) -> None:
  unknown = sorted({image.true_class for image in images
                    if image.true_class is not None} - set(class_names))
  if unknown:
    raise errors.InputError(
        f'class folder(s) {", ".join(unknown)} under {", ".join(paths)} are '
        f'not classes of this model, which knows {", ".join(class_names)}; '
        'rename or remove them (a folder with subfolders is read as labelled '
        'by them)')


def list_images(paths: Sequence[str],
                class_names: Sequence[str]) -> list[ImageFile]:
  """The images of `paths`, in order: each folder's sorted, then the next.

  Raises:
    errors.InputError: a path does not exist or is no image, nothing is
      found, or a labelled folder has a class the model does not know.
  """
  images = []
  skipped = folder_dataset.SkippedFiles()
  for path in paths:
    absolute = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(absolute):
      images += _folder_images(absolute, skipped)
    elif os.path.lexists(absolute):
      images.append(_file_image(absolute))
    else:
      raise errors.InputError(f'{path} does not exist')
  skipped.warn(', '.join(paths))
  if not images:
    raise errors.InputError(f'no images in {", ".join(paths)}')
  _check_classes(images, paths, class_names)
  return images


def decode(images: Sequence[ImageFile], inputs: run_inputs.RunInputs,
           skip_bad: bool) -> tuple[list[np.ndarray | None], int]:
  """Each image's stored pixels (uint8 [H, W, C]), None where skipped.

  Returns them and how many were skipped.

  Raises:
    errors.InputError: an image does not decode and `skip_bad` is False.
  """
  def decode_one(path: str) -> np.ndarray:
    if inputs.source == run_inputs.FOLDER:
      return folder_dataset.decode_image(path, inputs.image_size,
                                         inputs.grayscale)
    return folder_dataset.decode_stored(path)

  pixels = folder_dataset.decode_files([image.path for image in images],
                                       decode_one, skip_bad, 'pass --skip_bad')
  return pixels, sum(p is None for p in pixels)


def model_input(pixels: Sequence[np.ndarray],
                inputs: run_inputs.RunInputs) -> np.ndarray:
  """The model's input for decoded images: float32 [N, size, size, C].

  Images of one shape go through `input_pipeline.preprocess` together, with
  that static shape, so that the graph is the one training ran on its
  images (which resizes only where the size differs).
  """
  channels = 1 if inputs.grayscale else 3
  batch = np.empty((len(pixels), inputs.image_size, inputs.image_size,
                    channels), np.float32)
  by_shape = collections.defaultdict(list)
  for i, image in enumerate(pixels):
    by_shape[image.shape].append(i)
  for indices in by_shape.values():
    dataset = tf.data.Dataset.from_tensor_slices({
        'image': np.stack([pixels[i] for i in indices]),
        'label': np.zeros(len(indices), np.int64)})
    dataset = input_pipeline.preprocess(dataset, inputs.image_size,
                                        inputs.grayscale)
    batch[indices] = next(dataset.batch(len(indices)).as_numpy_iterator())[
        'image']
  return batch if inputs.mean is None else batch - inputs.mean
