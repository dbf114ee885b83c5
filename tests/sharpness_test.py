"""Sharpness: power iteration on Hessian-vector products, against exact Hessians."""

import functools

import flax.linen as nn
import jax
from jax import flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lettercnn.optim import sharpness


def test_power_iteration_matches_least_squares_top_eigenvalue():
  """Linear least squares: H = X'X / n exactly, whatever the weights."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(200, 30)) * np.linspace(0.2, 3.0, 30))
  y = jnp.asarray(rng.normal(size=200))
  loss = lambda w: 0.5 * jnp.mean((x @ w['w'] - y)**2)
  w0 = {'w': jnp.zeros(30)}
  hvp = jax.jit(lambda v: jax.jvp(jax.grad(loss), (w0,), (v,))[1])
  eigen = sharpness.top_eigenvalue(
      hvp, sharpness.random_unit_vector(0, w0),
      tolerance=1e-4, max_iterations=2000)
  true = np.linalg.eigvalsh(np.asarray(x.T @ x) / 200)[-1]
  assert eigen.converged
  assert eigen.value == pytest.approx(true, rel=1e-3)
  assert eigen.residual <= 1e-4


def test_power_iteration_says_when_it_did_not_converge():
  hvp = lambda v: {'w': v['w'] * jnp.array([1.0, 0.999])}
  start = {'w': jnp.array([0.6, 0.8])}
  eigen = sharpness.top_eigenvalue(hvp, start, tolerance=1e-9,
                                   max_iterations=3)
  assert not eigen.converged and eigen.iterations == 3


class _Tiny(nn.Module):
  """A dense layer and a tanh: a Hessian small enough to build whole."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    return nn.Dense(3)(jnp.tanh(nn.Dense(4)(x)))


def _flat_hessian(apply_fn, params, images, labels):
  """The Hessian of the mean loss over flat parameters; flat; unravel."""
  flat, unravel = flatten_util.ravel_pytree(params)
  return np.asarray(_hessian(apply_fn, flat, images, labels, unravel)), flat, unravel


@functools.partial(jax.jit, static_argnums=(0, 4))
def _hessian(apply_fn, flat, images, labels, unravel):
  return jax.hessian(lambda f: sharpness._mean_loss(
      apply_fn, unravel(f), images, labels))(flat)


def _flat_grad(apply_fn, params, image, label):
  flat, unravel = flatten_util.ravel_pytree(params)
  return np.asarray(jax.jit(jax.grad(lambda f: sharpness._mean_loss(
      apply_fn, unravel(f), image, label)))(flat))


def test_loss_hvp_is_the_bias_scaled_hessian_over_the_subset():
  model = _Tiny()
  rng = np.random.default_rng(1)
  images = rng.normal(size=(300, 5)).astype(np.float32)  # Two batches.
  labels = rng.integers(0, 3, 300)
  params = model.init(jax.random.key(0), images[:1])['params']
  hessian, flat, unravel = _flat_hessian(model.apply, params, images, labels)
  multipliers = sharpness.rate_multipliers(params, bias_lr_mult=2.0)
  root = np.sqrt(flatten_util.ravel_pytree(multipliers)[0])
  assert sorted(set(root.tolist())) == pytest.approx([1.0, np.sqrt(2.0)])
  hvp = sharpness.loss_hvp(model.apply, params,
                           sharpness.Subset(images, labels), multipliers)
  v = rng.normal(size=flat.shape).astype(np.float32)
  got = flatten_util.ravel_pytree(hvp(unravel(jnp.asarray(v))))[0]
  np.testing.assert_allclose(got, root * (hessian @ (root * v)), rtol=2e-3,
                             atol=1e-5)
  eigen = sharpness.top_eigenvalue(
      hvp, sharpness.random_unit_vector(1, params),
      tolerance=1e-4, max_iterations=3000)
  scaled = root[:, None] * hessian * root[None, :]
  top = np.linalg.eigvalsh(scaled)
  assert eigen.value == pytest.approx(top[np.argmax(np.abs(top))], rel=1e-3)


def test_tracker_starts_from_the_first_batchs_top_eigenvector(monkeypatch):
  """The whole subset's power iteration needs few products after the coarse one."""
  monkeypatch.setattr(sharpness, '_BATCH', 100)  # 400 images: 4 batches.
  model = _Tiny()
  rng = np.random.default_rng(4)
  # Batches alike, as 250 images of the same letters are: a batch's top
  # eigenvector is then nearly the subset's.
  base = rng.normal(size=(100, 5))
  images = (np.tile(base, (4, 1)) +
            0.05 * rng.normal(size=(400, 5))).astype(np.float32)
  labels = np.tile(rng.integers(0, 3, 100), 4)
  params = model.init(jax.random.key(5), images[:1])['params']
  config = ml_collections.ConfigDict({
      'seed': 0, 'bias_lr_mult': 2.0, 'sharpness_tolerance': 1e-3,
      'sharpness_max_iterations': 3000})
  subset = sharpness.Subset(images, labels)
  tracker = sharpness.Tracker(config, model.apply, subset, params)
  eigen = tracker.measure(params)

  hessian, _, _ = _flat_hessian(model.apply, params, images, labels)
  root = np.sqrt(flatten_util.ravel_pytree(tracker.multipliers)[0])
  top = np.linalg.eigvalsh(root[:, None] * hessian * root[None, :])
  assert eigen.converged
  assert eigen.value == pytest.approx(top[np.argmax(np.abs(top))], rel=1e-3)
  # From the same random direction over the whole subset at once.
  cold = sharpness.top_eigenvalue(
      sharpness.loss_hvp(model.apply, params, subset, tracker.multipliers),
      sharpness.random_unit_vector(config.seed, params),
      tolerance=config.sharpness_tolerance, max_iterations=3000)
  assert eigen.iterations <= cold.iterations / 4, (eigen.iterations,
                                                   cold.iterations)
  assert eigen.coarse_iterations > 0


def test_batch_sharpness_is_each_examples_curvature_along_its_gradient():
  model = _Tiny()
  rng = np.random.default_rng(2)
  images = rng.normal(size=(7, 5)).astype(np.float32)
  labels = rng.integers(0, 3, 7)
  params = model.init(jax.random.key(3), images[:1])['params']
  multipliers = sharpness.rate_multipliers(params, bias_lr_mult=2.0)
  root = np.sqrt(flatten_util.ravel_pytree(multipliers)[0])
  expected = []
  for image, label in zip(images, labels):
    hessian, flat, unravel = _flat_hessian(model.apply, params, image[None],
                                           label[None])
    grad = _flat_grad(model.apply, params, image[None], label[None])
    g, h = root * grad, root[:, None] * hessian * root[None, :]
    expected.append(g @ h @ g / (g @ g))
  got = sharpness.batch_sharpness(model.apply, params,
                                  sharpness.Subset(images, labels), multipliers)
  assert got == pytest.approx(np.mean(expected), rel=1e-3)


@pytest.mark.parametrize('optimizer,expected', [
    ('sgd', 2 / 50), ('momentum', 2 * 1.9 / 50),
    ('nesterov', 2 * 1.9 / 2.8 / 50), ('adam', None)])
def test_stable_rate_bound_per_solver(optimizer, expected):
  config = ml_collections.ConfigDict({'optimizer': optimizer,
                                      'momentum': 0.9})
  bound = sharpness.stable_rate_bound(config, 50.0)
  assert bound == (None if expected is None else pytest.approx(expected))
  assert sharpness.stable_rate_bound(config, -1.0) is None
