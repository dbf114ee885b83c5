"""DIGITS' learning-rate policies against their formulas (lettercnn.optim.schedules)."""

import math

import numpy as np
import pytest

from configs import default
from lettercnn.optim import schedules

STEPS_PER_EPOCH = 7
NUM_EPOCHS = 30
TOTAL = STEPS_PER_EPOCH * NUM_EPOCHS  # 210 updates.


def _config(**fields):
  config = default.get_config()
  config.learning_rate = 1e-3
  config.num_epochs = NUM_EPOCHS
  for field, value in fields.items():
    config[field] = value
  return config


def _rates(config, counts):
  schedule = schedules.create(config, STEPS_PER_EPOCH)
  return np.array([float(schedule(t)) for t in counts])


def test_step_default_steps_down_after_exactly_10_and_20_epochs():
  """The schedule is indexed by updates applied: 70 updates = 10 epochs."""
  rates = _rates(_config(), [0, 69, 70, 139, 140, 209])
  np.testing.assert_allclose(rates, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5],
                             rtol=1e-6)


@pytest.mark.parametrize('step_percent, boundaries', [
    (25, [52.5, 105, 157.5]), (40, [84, 168]), (100, []), (10, None)])
def test_step_is_gamma_to_the_floor_of_p_over_step(step_percent, boundaries):
  config = _config(lr_step_percent=step_percent, lr_decay_factor=0.5)
  counts = np.arange(TOTAL)
  expected = 1e-3 * 0.5**np.floor(100 * counts / TOTAL / step_percent + 1e-9)
  np.testing.assert_allclose(_rates(config, counts), expected, rtol=1e-6)
  if boundaries is not None:  # The first update at or past each position.
    changes = np.flatnonzero(np.diff(expected)) + 1
    assert changes.tolist() == [math.ceil(b) for b in boundaries]


def test_multistep_steps_down_at_each_listed_percent():
  config = _config(lr_policy='multistep', lr_multistep_percents=(20.0, 50.0),
                   lr_decay_factor=0.1)
  rates = _rates(config, [0, 41, 42, 104, 105, 209])  # 20% = 42, 50% = 105.
  np.testing.assert_allclose(rates, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5],
                             rtol=1e-6)


def test_fixed_never_changes():
  np.testing.assert_allclose(_rates(_config(lr_policy='fixed'), [0, 70, 209]),
                             [1e-3] * 3, rtol=0)


@pytest.mark.parametrize('policy, fields, formula', [
    ('exp', {'lr_decay_factor': 0.95}, lambda p: 1e-3 * 0.95**p),
    ('inv', {'lr_decay_factor': 0.1, 'lr_power': 0.75},
     lambda p: 1e-3 * (1 + 0.1 * p)**-0.75),
    ('poly', {'lr_power': 2.0}, lambda p: 1e-3 * (1 - p / 100)**2),
    ('sigmoid', {'lr_decay_factor': -0.2, 'lr_step_percent': 50.0},
     lambda p: 1e-3 / (1 + math.exp(-0.2 * (p - 50)))),
])
def test_smooth_policies_follow_their_formula(policy, fields, formula):
  config = _config(lr_policy=policy, **fields)
  counts = [0, 1, 69, 70, 71, 104, 105, 106, 209]
  expected = [formula(100 * t / TOTAL) for t in counts]
  np.testing.assert_allclose(_rates(config, counts), expected, rtol=1e-5)


@pytest.mark.parametrize('policy, formula', [
    ('step', lambda p: 1e-3 * 0.1**math.floor(p / (100 / 3) + 1e-9)),
    ('multistep', lambda p: 1e-3 * 0.5**((p >= 50) + (p >= 85))),
    ('exp', lambda p: 1e-3 * 0.95**p),
    ('inv', lambda p: 1e-3 * (1 + 0.1 * p)**-0.5),
    ('poly', lambda p: 1e-3 * (1 - p / 100)**3),
    ('sigmoid', lambda p: 1e-3 / (1 + math.exp(0.1 * (p - 50)))),
])
def test_fields_left_none_schedule_as_the_policys_digits_defaults(policy,
                                                                   formula):
  config = _config(lr_policy=policy)
  assert config.lr_decay_factor is None  # As configs/default.py leaves it.
  counts = [0, 1, 69, 70, 104, 105, 106, 178, 179, 209]
  expected = [formula(100 * t / TOTAL) for t in counts]
  np.testing.assert_allclose(_rates(config, counts), expected, rtol=1e-5)


def test_sigmoid_default_decays():
  rates = _rates(_config(lr_policy='sigmoid'), [0, 105, 209])
  assert rates[0] > 0.99e-3 and rates[1] == pytest.approx(0.5e-3)
  assert rates[2] < 0.01e-3


def test_step_count_past_int32_is_refused_before_any_compilation():
  """5250 steps an epoch (a counted folder's split): 409044 epochs fit."""
  from lettercnn import errors  # pylint: disable=g-import-not-at-top
  fits = _config(num_epochs=(2**31 - 1) // 5250)
  assert float(schedules.create(fits, 5250)(0)) == pytest.approx(1e-3)
  with pytest.raises(errors.InputError, match=(
      r'^num_epochs=409045 x 5250 steps per epoch \(batch_size=1\) is '
      r'2147486250 training steps, more than the step counter \(int32\) '
      r'holds, 2147483647')):
    schedules.create(_config(num_epochs=409045), 5250)
