"""Sharpness: the top Hessian eigenvalue of the training loss, and the rate it bounds.

Gradient descent on a quadratic with Hessian H diverges once lr > 2/lambda_max;
heavy-ball momentum mu moves the edge to 2(1 + mu)/lambda_max (Nesterov's to
2(1 + mu)/((1 + 2 mu) lambda_max)). LeCun, Simard & Pearlmutter (1993) set
LeNet's step size from lambda_max found by power iteration on Hessian-vector
products; in JAX such a product is a jvp of a grad.

The loss is the mean cross-entropy over a fixed subset of training images,
with the model in evaluation mode (no dropout) and XLA's own convolutions,
which, unlike the training lowerings' hand-written gradients, JAX can
differentiate forward. lettercnn trains biases at `bias_lr_mult` times the
rate, so the matrix whose top eigenvalue bounds the rate is P^1/2 H P^1/2,
P the per-parameter rate multipliers: that is what `top_eigenvalue` is given
here. Weight decay (lr x weight_decay_per_lr, ~1e-6) would add its
coefficient to every eigenvalue; it is left out.
"""

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

PyTree = Any
HessianVectorProduct = Callable[[PyTree], PyTree]

# Images per Hessian-vector product call: a subset is summed over batches.
_BATCH = 250


@dataclasses.dataclass(frozen=True)
class Eigen:
  """Power iteration's result: the estimate and how far it got.

  `residual` is ||Hv - value v|| / |value| at the returned unit vector v:
  some eigenvalue of H lies within residual x |value| of `value`.
  `iterations` counts the products with H; `coarse_iterations` those over
  the subset's first batch that chose the starting vector (`Tracker`).
  """
  value: float
  vector: PyTree
  iterations: int
  residual: float
  converged: bool
  coarse_iterations: int = 0


def _vdot(a: PyTree, b: PyTree) -> jax.Array:
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a),
                                              jax.tree.leaves(b)))


def _scaled(tree: PyTree, factor) -> PyTree:
  return jax.tree.map(lambda x: x * factor, tree)


def _normalised(tree: PyTree) -> PyTree:
  return _scaled(tree, 1.0 / jnp.sqrt(_vdot(tree, tree)))


def random_unit_vector(seed: int, like: PyTree) -> PyTree:
  """A random direction shaped like `like`, of norm 1.

  Drawn with numpy: JAX's random numbers would compile a generator for each
  parameter shape first (seconds on CPU, for one vector).
  """
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree.flatten(like)
  drawn = [rng.standard_normal(np.shape(x)).astype(np.float32)
           for x in leaves]
  norm = np.sqrt(sum(np.vdot(x, x) for x in drawn))
  return jax.tree.unflatten(treedef, [x / norm for x in drawn])


@jax.jit
def _rayleigh(vector: PyTree, product: PyTree):
  """The Rayleigh quotient of unit `vector`, the residual, the next vector."""
  value = _vdot(vector, product)
  residual = jax.tree.map(lambda hv, v: hv - value * v, product, vector)
  return value, jnp.sqrt(_vdot(residual, residual)), _normalised(product)


def top_eigenvalue(hvp: HessianVectorProduct, initial: PyTree, *,
                   tolerance: float, max_iterations: int) -> Eigen:
  """The eigenvalue of largest magnitude of H, by power iteration.

  `hvp(v)` is H v; `initial` is the starting unit vector (a random one, or
  the last call's `vector` to follow a changing H cheaply). Stops once the
  residual ||Hv - lambda v|| is at most `tolerance` x |lambda|, which puts an
  eigenvalue of H within that relative distance of lambda, or after
  `max_iterations` products (then `converged` is False).
  """
  vector = initial
  value, residual = math.nan, math.inf
  for iteration in range(1, max_iterations + 1):
    value, residual_norm, next_vector = _rayleigh(vector, hvp(vector))
    value = float(value)
    residual = float(residual_norm) / abs(value) if value else math.inf
    if residual <= tolerance:
      return Eigen(value, vector, iteration, residual, True)
    vector = next_vector
  return Eigen(value, vector, max_iterations, residual, False)


def rate_multipliers(params: PyTree, bias_lr_mult: float) -> PyTree:
  """Each parameter's rate as a multiple of the base rate (biases: the mult)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: np.full(np.shape(x), bias_lr_mult
                              if path[-1].key == 'bias' else 1.0,
                              np.float32), params)


def _mean_loss(apply_fn: Callable[..., jax.Array], params: PyTree,
               images: jax.Array, labels: jax.Array) -> jax.Array:
  logits = apply_fn({'params': params}, images)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass(frozen=True)
class Subset:
  """The fixed training images whose loss the sharpness is of."""
  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)

  def first_batch(self) -> 'Subset':
    """The subset's first batch alone: its products reuse the compiled call."""
    return Subset(self.images[:_BATCH], self.labels[:_BATCH])

  def batches(self):
    """(images, labels, weight) in batches; weights sum to 1 over the subset."""
    for start in range(0, len(self), _BATCH):
      stop = min(len(self), start + _BATCH)
      yield (self.images[start:stop], self.labels[start:stop],
             (stop - start) / len(self))


@functools.partial(jax.jit, static_argnums=0)
def _batch_hvp(apply_fn, params, root, vector, images, labels, weight):
  grad = jax.grad(lambda p: _mean_loss(apply_fn, p, images, labels))
  _, product = jax.jvp(grad, (params,), (jax.tree.map(jnp.multiply, root,
                                                      vector),))
  return jax.tree.map(lambda r, h: r * h * weight, root, product)


def loss_hvp(apply_fn: Callable[..., jax.Array], params: PyTree,
             subset: Subset, multipliers: PyTree) -> HessianVectorProduct:
  """v -> P^1/2 H P^1/2 v, H the Hessian of the subset's mean loss at params.

  A forward-mode derivative (jvp) of the reverse-mode gradient, summed over
  the subset's batches with their weights.
  """
  root = jax.tree.map(np.sqrt, multipliers)

  def hvp(vector):
    total = None
    for images, labels, weight in subset.batches():
      part = _batch_hvp(apply_fn, params, root, vector, images, labels, weight)
      total = part if total is None else jax.tree.map(jnp.add, total, part)
    return total

  return hvp


@functools.partial(jax.jit, static_argnums=0)
def _example_curvatures(apply_fn, params, root, images, labels):
  """Each example's g' H g / g' g (scaled coordinates), and whether g != 0."""

  def one(image, label):
    def loss(q):
      return _mean_loss(apply_fn, jax.tree.map(jnp.multiply, root, q),
                        image[None], label[None])
    # One gradient, then its linearisation applied to it: H g.
    grad, hessian_times = jax.linearize(
        jax.grad(loss), jax.tree.map(jnp.divide, params, root))
    product = hessian_times(grad)
    norm2 = _vdot(grad, grad)
    return _vdot(grad, product) / jnp.where(norm2 > 0, norm2, 1.0), norm2 > 0

  return jax.vmap(one)(images, labels)


def batch_sharpness(apply_fn: Callable[..., jax.Array], params: PyTree,
                    subset: Subset, multipliers: PyTree) -> float:
  """The mean over examples of each one's curvature along its own gradient.

  For example i with loss l_i, gradient g_i and Hessian H_i (all in the
  P^1/2-scaled coordinates): g_i' H_i g_i / g_i' g_i. At batch size 1 a step
  moves along exactly one such g_i, so this, not lambda_max of the mean
  loss, is the curvature the step meets. Examples with a zero gradient are
  left out of the mean.
  """
  root = jax.tree.map(np.sqrt, multipliers)
  total, count = 0.0, 0
  for images, labels, _ in subset.batches():
    curvature, valid = _example_curvatures(apply_fn, params, root, images,
                                           labels)
    total += float(jnp.sum(jnp.where(valid, curvature, 0.0)))
    count += int(jnp.sum(valid))
  return total / count if count else math.nan


# Each solver's stability edge on a quadratic, lr < factor(mu) / lambda, and
# the factor as text. Either momentum form: at a fixed rate they are the
# same update. The adaptive solvers have none: their step is not a fixed
# multiple of the gradient.
_EDGES = {
    'sgd': ('2/lambda', lambda mu: 2.0),
    'momentum': ('2(1+mu)/lambda', lambda mu: 2.0 * (1 + mu)),
    'nesterov': ('2(1+mu)/((1+2mu) lambda)',
                 lambda mu: 2.0 * (1 + mu) / (1 + 2 * mu)),
}


def stability_factor(config: ml_collections.ConfigDict) -> float | None:
  """c in lr < c / lambda for config's solver (`_EDGES`); None if adaptive."""
  edge = _EDGES.get(config.optimizer)
  return None if edge is None else edge[1](config.momentum)


def stable_rate_bound(config: ml_collections.ConfigDict,
                      sharpness: float) -> float | None:
  """The largest stable base rate `sharpness` predicts: factor / lambda.

  None for an adaptive solver and for lambda <= 0.
  """
  factor = stability_factor(config)
  if factor is None or not sharpness > 0:
    return None
  return factor / sharpness


def bound_formula(config: ml_collections.ConfigDict) -> str:
  """`stable_rate_bound`'s formula for config's solver, as text."""
  edge = _EDGES.get(config.optimizer)
  if edge is None:
    return f'none for {config.optimizer}'
  if config.optimizer == 'sgd':
    return edge[0]
  return f'{edge[0]}, mu={config.momentum:g}'


class Tracker:
  """lambda_max of a model's loss over a fixed subset, as its parameters move.

  Power iteration over the whole subset starts from the top eigenvector of
  the loss over its first batch (250 images), itself found by power
  iteration from the last measurement's eigenvector (the first: a random
  direction drawn from `config.seed`). The loss over the subset is the mean
  of its batches' losses, so their top eigenvectors lie close, and a
  batch's product costs a quarter of the subset's: along a training run
  (README, the 1e-3 trajectory over 1000 images) a measurement took half
  the time it took without the coarse start. The estimate and its residual
  are the whole subset's, as without it.
  """

  def __init__(self, config: ml_collections.ConfigDict,
               apply_fn: Callable[..., jax.Array], subset: Subset,
               params_like: PyTree):
    self._config, self.apply_fn, self.subset = config, apply_fn, subset
    self.multipliers = rate_multipliers(params_like, config.bias_lr_mult)
    self._vector = random_unit_vector(config.seed, params_like)

  def _top(self, params: PyTree, subset: Subset, start: PyTree) -> Eigen:
    return top_eigenvalue(
        loss_hvp(self.apply_fn, params, subset, self.multipliers), start,
        tolerance=self._config.sharpness_tolerance,
        max_iterations=self._config.sharpness_max_iterations)

  def measure(self, params: PyTree) -> Eigen:
    start, coarse_iterations = self._vector, 0
    if len(self.subset) > _BATCH:
      coarse = self._top(params, self.subset.first_batch(), start)
      start, coarse_iterations = coarse.vector, coarse.iterations
    eigen = dataclasses.replace(self._top(params, self.subset, start),
                                coarse_iterations=coarse_iterations)
    self._vector = eigen.vector
    return eigen
