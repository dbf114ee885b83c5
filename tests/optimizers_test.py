"""The solvers DIGITS offers (lettercnn.optim.optimizers)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from lettercnn.optim import optimizers


def _config(**fields):
  config = default.get_config()
  config.weight_decay_per_lr = 0.0
  for field, value in fields.items():
    config[field] = value
  return config


def _updates(config, schedule, gradients):
  """The updates of a weight `w` for a sequence of gradients (w held at 0)."""
  tx = optimizers.create(config, schedule)
  params = {'Dense_0': {'kernel': jnp.zeros(1)}}
  state = tx.init(params)
  out = []
  for g in gradients:
    updates, state = tx.update({'Dense_0': {'kernel': jnp.full(1, g)}}, state,
                               params)
    out.append(float(updates['Dense_0']['kernel'][0]))
  return out


def _step_down_at_2(count):
  return jnp.where(count < 2, 1.0, 0.1)


def test_caffe_momentum_carries_the_old_rate_past_a_step_down():
  """Gradient 1 three times, rate 1, 1, then 0.1; mu = 0.5.

  Caffe: V = mu*V + lr*g, w -= V: -1, -1.5, -(0.75 + 0.1) = -0.85.
  TensorFlow: A = mu*A + g, w -= lr*A: -1, -1.5, -0.1 * 1.75 = -0.175.
  """
  caffe = _updates(_config(momentum=0.5, momentum_form='caffe'),
                   _step_down_at_2, [1.0, 1.0, 1.0])
  tensorflow = _updates(_config(momentum=0.5, momentum_form='tensorflow'),
                        _step_down_at_2, [1.0, 1.0, 1.0])
  np.testing.assert_allclose(caffe, [-1.0, -1.5, -0.85], rtol=1e-6)
  np.testing.assert_allclose(tensorflow, [-1.0, -1.5, -0.175], rtol=1e-6)


def test_sgd_has_no_momentum():
  updates = _updates(_config(optimizer='sgd', momentum=0.9), lambda _: 0.5,
                     [1.0, 1.0])
  assert updates == [-0.5, -0.5]


def test_biases_get_bias_lr_mult_times_the_step_and_all_weights_decay():
  config = _config(optimizer='sgd', bias_lr_mult=2.0, learning_rate=0.5,
                   weight_decay_per_lr=0.2)  # Decay coefficient 0.1.
  tx = optimizers.create(config, lambda _: 0.5)
  params = {'Dense_0': {'kernel': jnp.ones(2), 'bias': jnp.ones(2)}}
  updates, _ = tx.update(params, tx.init(params), params)
  # (g + 0.1 * w) * 0.5, and twice that for the bias.
  np.testing.assert_allclose(updates['Dense_0']['kernel'], [-0.55, -0.55])
  np.testing.assert_allclose(updates['Dense_0']['bias'], [-1.1, -1.1])


@pytest.mark.parametrize('name', optimizers.OPTIMIZERS)
def test_every_solver_descends_a_quadratic(name):
  config = _config(optimizer=name, momentum=0.9, bias_lr_mult=1.0)
  tx = optimizers.create(config, optax.constant_schedule(0.05))
  params = {'Dense_0': {'kernel': jnp.array([2.0, -3.0])}}
  state = tx.init(params)
  loss = lambda p: jnp.sum(p['Dense_0']['kernel']**2)
  start = float(loss(params))
  for _ in range(20):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  assert float(loss(params)) < start
