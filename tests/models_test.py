"""LeNet as DIGITS defines it: shapes of outputs and of every layer."""

import jax
import jax.numpy as jnp
import pytest

from lettercnn import models


@pytest.mark.parametrize('num_classes', [10, 3])
def test_lenet_logits_shape(num_classes):
  model = models.create_model('lenet', num_classes)
  images = jnp.zeros((4, 28, 28, 1))
  params = model.init(jax.random.key(0), images)
  assert model.apply(params, images).shape == (4, num_classes)


def test_lenet_layers_match_digits():
  model = models.create_model('lenet', 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  shapes = jax.tree.map(lambda x: x.shape, params)
  assert shapes == {
      'Conv_0': {'kernel': (5, 5, 1, 20), 'bias': (20,)},
      'Conv_1': {'kernel': (5, 5, 20, 50), 'bias': (50,)},
      'Dense_0': {'kernel': (4 * 4 * 50, 500), 'bias': (500,)},
      'Dense_1': {'kernel': (500, 10), 'bias': (10,)},
  }
  # Xavier (Caffe): uniform within sqrt(3 / fan_in); biases start at zero.
  conv1 = params['Conv_0']['kernel']
  assert float(jnp.abs(conv1).max()) <= (3 / 25) ** 0.5
  assert float(jnp.abs(conv1).max()) > 0.8 * (3 / 25) ** 0.5
  assert float(jnp.abs(params['Dense_0']['bias']).max()) == 0.0


def test_unknown_model_is_an_error():
  with pytest.raises(ValueError, match='resnet'):
    models.create_model('resnet', 10)
