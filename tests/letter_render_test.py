"""Tests for the synthetic engraved-letter renderer."""

import numpy as np
import pytest
from scipy import ndimage

from lettercnn.data import letter_render

SIZE = letter_render.STORED_SIZE


def _render(letter: str, *seed: int) -> np.ndarray:
  return letter_render.render_letter(letter, np.random.default_rng(seed))


def _edge_features(image: np.ndarray) -> np.ndarray:
  """Blurred gradient magnitude of the grey image, zero mean and unit norm.

  Edges rather than intensities, because letters may be lighter or darker
  than their stone.
  """
  grey = ndimage.gaussian_filter(image.astype(np.float32).mean(axis=2), 1)
  grad_y, grad_x = np.gradient(grey)
  edges = ndimage.gaussian_filter(np.hypot(grad_x, grad_y), 2.5).ravel()
  edges -= edges.mean()
  return edges / np.linalg.norm(edges)


@pytest.mark.parametrize('letter', letter_render.LETTERS)
def test_every_letter_renders_an_rgb_uint8_image(letter):
  image = _render(letter, 0, 0)
  assert image.shape == (SIZE, SIZE, 3)
  assert image.dtype == np.uint8
  assert image.std() > 5


def test_same_seed_gives_an_identical_image():
  np.testing.assert_array_equal(_render('R', 3, 7, 11), _render('R', 3, 7, 11))


def test_ignores_numpy_global_random_state():
  np.random.seed(0)
  first = _render('S', 1, 2)
  np.random.seed(1)
  np.testing.assert_array_equal(first, _render('S', 1, 2))


def test_different_seeds_give_different_images():
  images = [_render('E', 0, 3, i) for i in range(5)]
  for i in range(len(images)):
    for j in range(i):
      assert np.abs(images[i].astype(int) - images[j]).mean() > 5


def test_samples_of_one_letter_vary_widely():
  images = np.stack([_render('A', 1, 0, i) for i in range(20)]).astype(float)
  assert images.std(axis=0).mean() > 30  # Per pixel, across samples.
  brightness = images.mean(axis=(1, 2, 3))
  assert brightness.max() - brightness.min() > 60


def test_the_letter_shapes_the_image():
  # The rng draws do not depend on the letter, so a shared seed gives the
  # same stone, light and view, and only the carved glyph differs.
  for seed in range(5):
    difference = np.abs(
        _render('O', 2, seed).astype(int) - _render('T', 2, seed))
    assert difference.mean() > 5
    # The glyphs share pixels near the centre; the corners are mostly stone.
    assert difference[:8, :8].mean() < difference[24:40, 8:56].mean()


def test_letters_are_told_apart_by_nearest_centroid():
  num_train, num_test = 30, 20
  features = np.array([
      [_edge_features(_render(letter, 9, label, i))
       for i in range(num_train + num_test)]
      for label, letter in enumerate(letter_render.LETTERS)])
  centroids = features[:, :num_train].mean(axis=1)
  predictions = np.argmax(features[:, num_train:] @ centroids.T, axis=-1)
  labels = np.arange(len(letter_render.LETTERS))[:, None]
  # Chance is 0.1; this crude classifier gets about 0.4.
  assert (predictions == labels).mean() > 0.2
