"""The models as DIGITS defines them: shapes of outputs and of every layer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lettercnn.models import networks as models


@pytest.mark.parametrize('name', ['lenet', 'lenet_tf'])
@pytest.mark.parametrize('num_classes', [10, 3])
def test_lenet_logits_shape(name, num_classes):
  model = models.create_model(name, num_classes)
  images = jnp.zeros((4, 28, 28, 1))
  params = model.init(jax.random.key(0), images)
  assert model.apply(params, images).shape == (4, num_classes)


_LENET_SHAPES = {
    'Conv_0': {'kernel': (5, 5, 1, 20), 'bias': (20,)},
    'Conv_1': {'kernel': (5, 5, 20, 50), 'bias': (50,)},
    'Dense_0': {'kernel': (4 * 4 * 50, 500), 'bias': (500,)},
    'Dense_1': {'kernel': (500, 10), 'bias': (10,)},
}


def _lenet_params(name):
  model = models.create_model(name, 10)
  return model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']


def _assert_zero_biases(params):
  for layer in params.values():
    assert float(jnp.abs(layer['bias']).max()) == 0.0


def _assert_uniform_within(kernel, bound):
  """All within +-bound, and filling it (so not a smaller init's bound)."""
  assert float(jnp.abs(kernel).max()) <= bound
  assert float(jnp.abs(kernel).max()) > 0.8 * bound


def test_lenet_layers_match_digits():
  params = _lenet_params('lenet')
  assert jax.tree.map(lambda x: x.shape, params) == _LENET_SHAPES
  # Xavier (Caffe): uniform within sqrt(3 / fan_in); biases start at zero.
  _assert_uniform_within(params['Conv_0']['kernel'], (3 / 25) ** 0.5)
  _assert_zero_biases(params)


def test_lenet_tf_layers_match_digits_tensorflow():
  params = _lenet_params('lenet_tf')
  assert jax.tree.map(lambda x: x.shape, params) == _LENET_SHAPES
  # Glorot (TensorFlow's xavier_initializer): sqrt(6 / (fan_in + fan_out)),
  # a conv's fans counting its 5x5 window.
  for layer, fan_in, fan_out in (('Conv_0', 25 * 1, 25 * 20),
                                 ('Conv_1', 25 * 20, 25 * 50),
                                 ('Dense_0', 800, 500), ('Dense_1', 500, 10)):
    _assert_uniform_within(params[layer]['kernel'],
                           (6 / (fan_in + fan_out)) ** 0.5)
  _assert_zero_biases(params)


def test_lenet_tf_has_a_relu_after_conv1():
  """Negative images, positive conv1 filters: the ReLU zeroes every map."""
  images = -jnp.asarray(np.random.default_rng(0).uniform(
      1, 255, (2, 28, 28, 1)), jnp.float32)
  caffe = models.create_model('lenet', 10)
  tensorflow = models.create_model('lenet_tf', 10)
  params = caffe.init(jax.random.key(0), images)['params']
  params = dict(params, Conv_0={'kernel': jnp.abs(params['Conv_0']['kernel']),
                                'bias': params['Conv_0']['bias']})

  def change_from_black(model):
    logits = model.apply({'params': params}, images)
    black = model.apply({'params': params}, jnp.zeros_like(images))
    return float(jnp.abs(logits - black).max())

  assert change_from_black(tensorflow) == 0.0
  assert change_from_black(caffe) > 0.0


@functools.cache
def _small_model(name):
  """A 2-class `name` at a small input, its variables and 4 random images.

  Cached: AlexNet's 22M parameters take seconds to draw.
  """
  size, channels = {'lenet_tf': (28, 1),
                    'alexnet': (models.AlexNet.min_image_size, 3)}[name]
  model = models.create_model(name, 2)
  images = jnp.asarray(np.random.default_rng(0).uniform(
      0, 255, (4, size, size, channels)), jnp.float32)
  return model, jax.jit(model.init)(jax.random.key(0), images), images


@pytest.mark.parametrize('name', ['lenet_tf', 'alexnet'])
def test_dropout_only_in_training(name):
  model, variables, images = _small_model(name)
  apply = jax.jit(model.apply, static_argnames='train')

  def train(seed):
    return apply(variables, images, train=True,
                 rngs={'dropout': jax.random.key(seed)})

  np.testing.assert_array_equal(train(1), train(1))
  assert float(jnp.abs(train(1) - train(2)).max()) > 1e-6
  # No rng needed, and none used: any given is ignored.
  evaluation = apply(variables, images)
  np.testing.assert_array_equal(evaluation, apply(
      variables, images, train=False, rngs={'dropout': jax.random.key(1)}))
  assert float(jnp.abs(evaluation - train(1)).max()) > 1e-6


def test_alexnet_layers_match_digits():
  params = _small_model('alexnet')[1]['params']
  # Groups of 2 halve the input channels each filter sees; a 1x1 pool5 map
  # of 256 channels feeds fc6.
  assert jax.tree.map(lambda x: x.shape, params) == {
      'conv1': {'kernel': (11, 11, 3, 96), 'bias': (96,)},
      'conv2': {'kernel': (5, 5, 48, 256), 'bias': (256,)},
      'conv3': {'kernel': (3, 3, 256, 384), 'bias': (384,)},
      'conv4': {'kernel': (3, 3, 192, 384), 'bias': (384,)},
      'conv5': {'kernel': (3, 3, 192, 256), 'bias': (256,)},
      'fc6': {'kernel': (256, 4096), 'bias': (4096,)},
      'fc7': {'kernel': (4096, 4096), 'bias': (4096,)},
      'fc8': {'kernel': (4096, 2), 'bias': (2,)},
  }
  # alexnet.prototxt's Gaussian fillers and constant biases.
  for layer, std, bias in (('conv1', 0.01, 0), ('conv2', 0.01, 0.1),
                           ('conv3', 0.01, 0), ('conv4', 0.01, 0.1),
                           ('conv5', 0.01, 0.1), ('fc6', 0.005, 0.1),
                           ('fc7', 0.005, 0.1), ('fc8', 0.01, 0)):
    assert float(jnp.std(params[layer]['kernel'])) == pytest.approx(
        std, rel=0.05), layer
    np.testing.assert_array_equal(params[layer]['bias'], np.float32(bias))


def test_alexnet_at_digits_size_has_caffe_map_sizes():
  """227 pixels: 55 -> 27 -> 13 -> 6, Caffe's 9216 inputs to fc6."""
  model = models.create_model('alexnet', 10)
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 227, 227, 3)))['params']
  assert params['fc6']['kernel'].shape == (6 * 6 * 256, 4096)
  # 256 pixels, as DIGITS squashes: Caffe rounds 62 -> 31 -> 15 -> 7 up.
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 256, 256, 3)))['params']
  assert params['fc6']['kernel'].shape == (7 * 7 * 256, 4096)


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_min_image_size_is_the_smallest_input(name):
  model = models.create_model(name, 10)
  size = models.MODELS[name].min_image_size

  def init(size):
    return jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, size, size, 3)))['params']

  assert all(layer['kernel'].shape[0] > 0 for layer in init(size).values())
  with pytest.raises(ValueError, match='too small'):
    init(size - 1)


def test_alexnet_has_only_xla_convolutions():
  model = models.create_model('alexnet', 10, lowering='matmul')
  with pytest.raises(ValueError, match="no lowering 'matmul'"):
    model.init(jax.random.key(0), jnp.zeros((1, 39, 39, 3)))


def test_unknown_model_is_an_error():
  with pytest.raises(ValueError, match='resnet'):
    models.create_model('resnet', 10)
