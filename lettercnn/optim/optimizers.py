"""The solvers DIGITS offers, built from optax.

Every solver gets the gradient with L2 weight decay added first
(`config.weight_decay_per_lr * config.learning_rate` times the weights, a
fixed coefficient, as DIGITS' Caffe sets weight_decay = base_lr / 100) and
the biases' gradient multiplied by `config.bias_lr_mult` (Caffe's `lr_mult`
of bias blobs; it scales their step under every solver).

Momentum has two forms, which differ only when the rate changes:

* 'caffe':      V = mu * V + lr_t * g;  w -= V   (Caffe's SGD solver)
* 'tensorflow': A = mu * A + g;  w -= lr_t * A   (tf.train.MomentumOptimizer)

At a step-down from lr to lr / 10, Caffe's velocity still holds the steps
taken at lr and fades at rate mu, while TensorFlow's whole accumulated
velocity is at once applied at lr / 10. 'nesterov' uses the same two forms
with optax's Nesterov trace. The adaptive solvers use TensorFlow's defaults
(the DIGITS backend that offers them all): adagrad initial accumulator 0.1,
rmsprop decay 0.9 and epsilon 1e-10, adadelta rho 0.95 and epsilon 1e-8,
adam betas 0.9 and 0.999 and epsilon 1e-8.
"""

from typing import Any

import jax
import ml_collections
import optax

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adadelta',
              'adam')
MOMENTUM_FORMS = ('caffe', 'tensorflow')


def _is_bias(params: Any) -> Any:
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path[-1].key == 'bias', params)


def _solver(config: ml_collections.ConfigDict,
            schedule: optax.Schedule) -> optax.GradientTransformation:
  """The update rule of `config.optimizer`, its steps scaled by `schedule`."""
  name, mu = config.optimizer, config.momentum
  if name in ('momentum', 'nesterov'):
    trace = optax.trace(decay=mu, nesterov=name == 'nesterov')
    if config.momentum_form == 'caffe':  # The rate enters the velocity.
      return optax.chain(optax.scale_by_learning_rate(schedule), trace)
    return optax.chain(trace, optax.scale_by_learning_rate(schedule))
  solvers = {
      'sgd': lambda: optax.sgd(schedule),
      'adagrad': lambda: optax.adagrad(schedule, initial_accumulator_value=0.1,
                                       eps=1e-7),
      'rmsprop': lambda: optax.rmsprop(schedule, decay=0.9, eps=1e-10),
      'adadelta': lambda: optax.adadelta(schedule, rho=0.95, eps=1e-8),
      'adam': lambda: optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-8),
  }
  if name not in solvers:
    raise ValueError(f'unknown optimizer {name!r}; one of {OPTIMIZERS}')
  return solvers[name]()


def create(config: ml_collections.ConfigDict,
           schedule: optax.Schedule) -> optax.GradientTransformation:
  """Weight decay, the bias multiplier, then the solver of `config`."""
  return optax.chain(
      optax.add_decayed_weights(config.learning_rate *
                                config.weight_decay_per_lr),
      optax.masked(optax.scale(config.bias_lr_mult), _is_bias),
      _solver(config, schedule),
  )
