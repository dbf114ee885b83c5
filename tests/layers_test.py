"""The matmul lowering computes what XLA's convolution and pooling compute."""

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from lettercnn.models import layers
from lettercnn.models import networks as models


def _xla_conv(x, kernel):
  return lax.conv_general_dilated(x, kernel, (1, 1), 'VALID',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _conv_chwn(x, kernel, bias):
  """`layers.conv_valid_chwn` with NHWC in and out."""
  y = layers.conv_valid_chwn(jnp.transpose(x, (3, 1, 2, 0)), kernel, bias)
  return jnp.transpose(y, (3, 1, 2, 0))


def _pool_chwn(x):
  """`layers.max_pool_2x2_chwn` with NHWC in and out."""
  y = layers.max_pool_2x2_chwn(jnp.transpose(x, (3, 1, 2, 0)))
  return jnp.transpose(y, (3, 1, 2, 0))


_CONVS = {'nhwc': lambda x, k, b: layers.conv_valid(x, k) + b,
          'chwn': _conv_chwn}
_POOLS = {'nhwc': layers.max_pool_2x2, 'chwn': _pool_chwn}


@pytest.mark.parametrize('layout', list(_CONVS))
@pytest.mark.parametrize('shape', [(2, 12, 12, 3), (3, 9, 11, 1)],
                         ids=['square', 'oblong'])
def test_conv_valid_matches_xla_with_gradients(layout, shape):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(5, 5, shape[-1], 4)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(4,)), jnp.float32)
  conv = _CONVS[layout]

  def xla(x, k, b):
    return _xla_conv(x, k) + b

  np.testing.assert_allclose(conv(x, kernel, bias), xla(x, kernel, bias),
                             rtol=1e-4, atol=1e-4)

  def loss(conv):
    return lambda *args: jnp.sum(jnp.sin(conv(*args)))

  ours = jax.grad(loss(conv), argnums=(0, 1, 2))(x, kernel, bias)
  theirs = jax.grad(loss(xla), argnums=(0, 1, 2))(x, kernel, bias)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_conv_chwn_without_input_grad_keeps_the_kernel_grad():
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(1, 8, 8, 2)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(5, 5, 1, 3)), jnp.float32)
  bias = jnp.zeros((3,), jnp.float32)

  def loss(input_grad):
    return lambda *args: jnp.sum(jnp.sin(
        layers.conv_valid_chwn(*args, input_grad=input_grad)))

  dx, dk, db = jax.grad(loss(False), argnums=(0, 1, 2))(x, kernel, bias)
  np.testing.assert_array_equal(dx, np.zeros(x.shape))
  full = jax.grad(loss(True), argnums=(0, 1, 2))(x, kernel, bias)
  np.testing.assert_array_equal(dk, full[1])
  np.testing.assert_array_equal(db, full[2])


@pytest.mark.parametrize('layout', list(_POOLS))
@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (2, 7, 9, 3)],
                         ids=['even', 'odd'])
def test_max_pool_matches_flax_with_gradients(layout, shape):
  x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
  pool = _POOLS[layout]

  def flax_pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))

  np.testing.assert_array_equal(pool(x), flax_pool(x))
  np.testing.assert_array_equal(
      jax.grad(lambda x: jnp.sum(pool(x) ** 2))(x),
      jax.grad(lambda x: jnp.sum(flax_pool(x) ** 2))(x))


@pytest.mark.parametrize('name', ['lenet', 'lenet_tf'])
@pytest.mark.parametrize('size', [28, 16, 18])  # 18: odd sides to pool.
@pytest.mark.parametrize('lowering', ['matmul', 'matmul_chwn'])
def test_lenet_lowerings_agree(name, size, lowering):
  images = jnp.asarray(
      np.random.default_rng(2).uniform(0, 255, size=(3, size, size, 1)),
      jnp.float32)
  xla = models.create_model(name, 10)
  matmul = models.create_model(name, 10, lowering=lowering)
  params = xla.init(jax.random.key(0), images)
  # The same parameters, initial values included.
  np.testing.assert_equal(jax.device_get(matmul.init(jax.random.key(0),
                                                     images)),
                          jax.device_get(params))
  np.testing.assert_allclose(matmul.apply(params, images),
                             xla.apply(params, images), rtol=1e-4, atol=1e-4)
  # Training too: the lowering leaves the dropout masks as they are.
  rngs = {'dropout': jax.random.key(1)}
  np.testing.assert_allclose(
      matmul.apply(params, images, train=True, rngs=rngs),
      xla.apply(params, images, train=True, rngs=rngs), rtol=1e-4, atol=1e-4)

  def loss(model):
    return lambda p: jnp.sum(jnp.sin(model.apply(p, images, train=True,
                                                 rngs=rngs)))

  ours, theirs = jax.grad(loss(matmul))(params), jax.grad(loss(xla))(params)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def _special_windows() -> np.ndarray:
  """Every 2x2 window of 0, 1, NaN, inf and -inf, as (625, 2, 2, 1) images."""
  values = np.array([0, 1, np.nan, np.inf, -np.inf], np.float32)
  corners = np.stack(np.meshgrid(*[values] * 4, indexing='ij'), axis=-1)
  return corners.reshape(-1, 2, 2, 1)


@pytest.mark.parametrize('x', [
    _special_windows(),
    np.where(np.random.default_rng(4).uniform(size=(2, 8, 8, 3)) < 0.3,
             np.random.default_rng(5).choice([np.nan, np.inf, -np.inf],
                                             size=(2, 8, 8, 3)),
             np.random.default_rng(6).normal(size=(2, 8, 8, 3))).astype(
                 np.float32),
], ids=['every_window', 'random'])
@pytest.mark.parametrize('layout', list(_POOLS))
def test_max_pool_matches_flax_on_nan_and_infinities(x, layout):
  x = jnp.asarray(x)

  def flax_pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))

  ours, our_vjp = jax.vjp(_POOLS[layout], x)
  theirs, their_vjp = jax.vjp(flax_pool, x)
  # A NaN in a window makes the window's max NaN, e.g. [[0, 0], [0, nan]].
  assert np.isnan(theirs).any()
  np.testing.assert_array_equal(ours, theirs)  # NaN where NaN, inf where inf.
  # Distinct cotangents, so each must reach the element XLA's gradient picks.
  cotangent = jnp.arange(1, theirs.size + 1, dtype=jnp.float32).reshape(
      theirs.shape)
  np.testing.assert_array_equal(our_vjp(cotangent)[0],
                                their_vjp(cotangent)[0])


def test_local_response_norm_is_caffes():
  x = np.random.default_rng(7).normal(scale=30, size=(2, 3, 3, 7))
  alpha, beta = 1e-4, 0.75
  expected = np.empty_like(x)
  for c in range(7):  # Caffe: the 5 channels around c, those that exist.
    window = x[..., max(0, c - 2):c + 3]
    expected[..., c] = x[..., c] / (
        1 + alpha / 5 * np.sum(window**2, axis=-1))**beta
  np.testing.assert_allclose(
      layers.local_response_norm(jnp.asarray(x, jnp.float32)), expected,
      rtol=1e-5)


def _caffe_pool_reference(x: np.ndarray, window: int,
                          stride: int) -> np.ndarray:
  """Caffe's MAX pooling (pad 0) written out: windows cut at the edge."""
  n, h, w, c = x.shape
  oh = -(-(h - window) // stride) + 1
  ow = -(-(w - window) // stride) + 1
  out = np.empty((n, oh, ow, c), x.dtype)
  for i in range(oh):
    for j in range(ow):
      out[:, i, j] = x[:, i * stride:min(i * stride + window, h),
                       j * stride:min(j * stride + window, w)].max(axis=(1, 2))
  return out


@pytest.mark.parametrize('side', [2, 3, 8, 13, 27, 62])
def test_caffe_max_pool_rounds_up_as_caffe(side):
  x = np.random.default_rng(8).normal(size=(2, side, side + 1, 3)).astype(
      np.float32)
  ours = layers.caffe_max_pool(jnp.asarray(x), 3, 2)
  np.testing.assert_array_equal(ours, _caffe_pool_reference(x, 3, 2))
  if (side - 3) % 2 == 0:  # The windows tile the side: flax's size too.
    assert ours.shape[1] == nn.max_pool(jnp.asarray(x), (3, 3),
                                        strides=(2, 2)).shape[1]


def test_caffe_max_pool_refuses_a_side_without_a_window():
  with pytest.raises(ValueError, match='too small'):
    layers.caffe_max_pool(jnp.zeros((1, 1, 4, 1)), 3, 2)
