"""DIGITS' seven learning-rate policies as optax schedules.

DIGITS states a policy's positions in percent of training, p = 100 * t / T,
where t is the number of updates already applied (what an optax schedule is
called with) and T the run's total. With lr the base rate, gamma
`config.lr_decay_factor`, step `config.lr_step_percent` and power
`config.lr_power`:

| policy    | rate at p                                    |
| --------- | -------------------------------------------- |
| fixed     | lr                                           |
| step      | lr * gamma^floor(p / step)                   |
| multistep | lr * gamma^(number of lr_multistep_percents <= p) |
| exp       | lr * gamma^p                                 |
| inv       | lr * (1 + gamma * p)^(-power)                |
| poly      | lr * (1 - p / 100)^power                     |
| sigmoid   | lr / (1 + exp(gamma * (p - step)))           |

'step' and 'multistep' are `optax.piecewise_constant_schedule`s whose
boundaries are the first update at or past each position, so 'step' every
33.3% of 30 epochs steps down after exactly 10 and 20 epochs.
"""

import math
from typing import Callable

import jax.numpy as jnp
import ml_collections
import optax

POLICIES = ('fixed', 'step', 'multistep', 'exp', 'inv', 'poly', 'sigmoid')


def _boundary(percent: float, total_steps: int) -> int:
  """The first update count t with 100 * t / total_steps >= percent."""
  # Rounded first, so that 100 / 3 % of 157,500 is 52,500, not 52,501.
  return math.ceil(round(percent / 100 * total_steps, 6))


def _piecewise(config: ml_collections.ConfigDict, percents: list[float],
               total_steps: int) -> optax.Schedule:
  boundaries = sorted({_boundary(p, total_steps) for p in percents})
  return optax.piecewise_constant_schedule(
      init_value=config.learning_rate,
      boundaries_and_scales={b: config.lr_decay_factor for b in boundaries
                             if 0 < b < total_steps})


def create(config: ml_collections.ConfigDict,
           steps_per_epoch: int) -> optax.Schedule:
  """The schedule of `config.lr_policy` over the run's num_epochs."""
  total_steps = config.num_epochs * steps_per_epoch
  lr, gamma = config.learning_rate, config.lr_decay_factor
  power, step = config.lr_power, config.lr_step_percent
  policy = config.lr_policy
  if policy == 'step':
    count = math.ceil(100 / step)
    return _piecewise(config, [k * step for k in range(1, count)], total_steps)
  if policy == 'multistep':
    return _piecewise(config, list(config.lr_multistep_percents), total_steps)
  if policy == 'fixed':
    return optax.constant_schedule(lr)
  # Of the update count t; poly's 1 - p/100 as (T - t) / T, exact near the end.
  formulas: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
      'exp': lambda t: lr * gamma**(100 * t / total_steps),
      'inv': lambda t: lr * (1 + gamma * 100 * t / total_steps)**(-power),
      'poly': lambda t: lr * ((total_steps - t) / total_steps)**power,
      'sigmoid': lambda t: lr / (1 + jnp.exp(gamma * (100 * t / total_steps
                                                      - step))),
  }
  if policy not in formulas:
    raise ValueError(f'unknown lr_policy {policy!r}; one of {POLICIES}')
  formula = formulas[policy]
  return lambda count: formula(jnp.asarray(count, jnp.float32))
