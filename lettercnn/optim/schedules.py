"""DIGITS' seven learning-rate policies as optax schedules.

DIGITS states a policy's positions in percent of training, p = 100 * t / T,
where t is the number of updates already applied (what an optax schedule is
called with) and T the run's total. With lr the base rate, gamma
`config.lr_decay_factor`, step `config.lr_step_percent` and power
`config.lr_power` (each as `settings` resolves it):

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

Sigmoid is Caffe's lr / (1 + exp(-gamma' * (iter - stepsize))) with
gamma' = -gamma * 100 / T: a positive gamma decays, as DIGITS' Gamma does.

A policy field left None takes the chosen policy's DIGITS default
(POLICY_DEFAULTS), and a field the policy does not read its UNREAD_DEFAULTS
value; `resolve_defaults` writes them into a config, as lettercnn's commands
do once the overrides are applied, so that no run records a None.
"""

import math
from typing import Any, Callable, Mapping, NamedTuple

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lettercnn import errors

POLICIES = ('fixed', 'step', 'multistep', 'exp', 'inv', 'poly', 'sigmoid')

# DIGITS' defaults for each policy, of the fields it reads.
POLICY_DEFAULTS: dict[str, dict[str, Any]] = {
    'fixed': {},
    'step': {'lr_decay_factor': 0.1, 'lr_step_percent': 100 / 3},
    'multistep': {'lr_decay_factor': 0.5,
                  'lr_multistep_percents': (50.0, 85.0)},
    'exp': {'lr_decay_factor': 0.95},
    'inv': {'lr_decay_factor': 0.1, 'lr_power': 0.5},
    'poly': {'lr_power': 3.0},
    'sigmoid': {'lr_decay_factor': 0.1, 'lr_step_percent': 50.0},
}
# The value of a field the chosen policy does not read: fixed, so that runs
# of one policy record one config whatever the others' defaults.
UNREAD_DEFAULTS: dict[str, Any] = {
    'lr_decay_factor': 0.1, 'lr_step_percent': 100 / 3,
    'lr_multistep_percents': (50.0, 75.0), 'lr_power': 1.0,
}


class Settings(NamedTuple):
  """A policy's fields with every None resolved."""
  lr_decay_factor: float
  lr_step_percent: float
  lr_multistep_percents: tuple[float, ...]
  lr_power: float


def settings(config: Mapping[str, Any]) -> Settings:
  """The policy fields of `config` (a ConfigDict or its dict), None resolved.

  A field that is set keeps its value; a None one takes the policy's DIGITS
  default, or, for a field the policy does not read, UNREAD_DEFAULTS'.
  """
  defaults = {**UNREAD_DEFAULTS,
              **POLICY_DEFAULTS.get(config.get('lr_policy'), {})}
  values = {field: default if config.get(field) is None else config[field]
            for field, default in defaults.items()}
  values['lr_multistep_percents'] = tuple(values['lr_multistep_percents'])
  return Settings(**values)


def resolve_defaults(config: ml_collections.ConfigDict) -> None:
  """Writes `settings(config)` into the policy fields that are None."""
  for field, value in settings(config)._asdict().items():
    if config[field] is None:
      config[field] = value


def _boundary(percent: float, total_steps: int) -> int:
  """The first update count t with 100 * t / total_steps >= percent."""
  # Rounded first, so that 100 / 3 % of 157,500 is 52,500, not 52,501.
  return math.ceil(round(percent / 100 * total_steps, 6))


def _piecewise(lr: float, gamma: float, percents: list[float],
               total_steps: int) -> optax.Schedule:
  boundaries = sorted({_boundary(p, total_steps) for p in percents})
  return optax.piecewise_constant_schedule(
      init_value=lr,
      boundaries_and_scales={b: gamma for b in boundaries
                             if 0 < b < total_steps})


# The step counters (the train state's and optax's) are int32.
MAX_TOTAL_STEPS = int(np.iinfo(np.int32).max)


def check_total_steps(config: ml_collections.ConfigDict,
                      steps_per_epoch: int) -> None:
  """Raises InputError if num_epochs x `steps_per_epoch` overflows int32."""
  total = config.num_epochs * steps_per_epoch
  if total > MAX_TOTAL_STEPS:
    raise errors.InputError(
        f'num_epochs={config.num_epochs} x {steps_per_epoch} steps per '
        f'epoch (batch_size={config.batch_size}) is {total} training steps,'
        f' more than the step counter (int32) holds, {MAX_TOTAL_STEPS}; '
        'lower num_epochs or raise batch_size')


def create(config: ml_collections.ConfigDict,
           steps_per_epoch: int) -> optax.Schedule:
  """The schedule of `config.lr_policy` over the run's num_epochs.

  Raises:
    errors.InputError: the run's step count does not fit the step counter
      (`check_total_steps`).
  """
  check_total_steps(config, steps_per_epoch)
  total_steps = config.num_epochs * steps_per_epoch
  resolved = settings(config)
  lr, gamma = config.learning_rate, resolved.lr_decay_factor
  power, step = resolved.lr_power, resolved.lr_step_percent
  policy = config.lr_policy
  if policy == 'step':
    count = math.ceil(100 / step)
    return _piecewise(lr, gamma, [k * step for k in range(1, count)],
                      total_steps)
  if policy == 'multistep':
    return _piecewise(lr, gamma, list(resolved.lr_multistep_percents),
                      total_steps)
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
