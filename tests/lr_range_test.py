"""The range test's curve: smoothing, the stop, the suggestions, on stored curves."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lettercnn.lr_find import range_test as lr_range

# 31 rates, 5 a decade, 1e-6 to 1; fastai's view drops the first 31 // 10 = 3
# and the last 5 points, leaving points 3-25.
RATES = np.geomspace(1e-6, 1.0, 31)
LOSSES = ([3.0] * 3 + [2.0] * 7 +  # points 0-9: a plateau
          [1.9, 1.8, 1.7, 1.6, 1.5, 1.2, 1.0, 0.9, 0.85, 0.8] +  # 10-19
          [0.9, 1.5, 3.0, 5.0, 8.0] + [9.0] * 6)  # 20-30: the blow-up


def test_suggestions_on_a_stored_curve_are_exact():
  suggested = lr_range.suggestions(RATES, LOSSES, num_steps=31)
  # The minimum is point 19 (0.8): its rate, 10**-2.2, over 10.
  assert suggested['minimum_div_10'] == pytest.approx(10**-3.2, rel=1e-12)
  # The steepest fall per log(rate) is 1.5 -> 1.2, from point 14 (10**-3.2).
  assert suggested['steepest'] == pytest.approx(10**-3.2, rel=1e-12)
  # The longest strictly falling run: a 2.0 (the last point of the plateau
  # seen first at its start), then points 10-19, 11 points; in fastai's
  # arithmetic (trimmed indices) it starts at 16 - 11 = 5, and the valley is
  # at 5 + int(11 / 3) + int(11 / 6) = 9, i.e. point 12 (10**-3.6).
  assert suggested['valley'] == pytest.approx(10**-3.6, rel=1e-12)


def test_steepest_is_measured_against_log_rate():
  # Falls of 1.0 a decade, then 0.7 over half a decade: the last is steeper.
  rates = np.array([1e-4, 1e-3, 1e-2, 10**-1.5, 1e-1])
  losses = np.array([3.0, 2.0, 1.0, 0.3, 0.4])
  assert lr_range.steepest(rates, losses) == pytest.approx(1e-2)
  # Lightning's old rule, the fall per point, picks the first decade.
  assert np.argmin(np.diff(losses)) == 0


def test_smoothing_is_bias_corrected():
  smooth = lr_range.smoothed([2.0, 2.0, 2.0], beta=0.9)
  np.testing.assert_allclose(smooth, [2.0, 2.0, 2.0])  # Not pulled to 0.
  smooth = lr_range.smoothed([1.0, 3.0], beta=0.5)
  # avg = 0.5, then 0.5 * 0.5 + 0.5 * 3 = 1.75; / (1 - 0.25) = 7/3.
  np.testing.assert_allclose(smooth, [1.0, 7 / 3])


def test_stop_at_four_times_the_minimum_or_not_finite():
  losses = [4.0, 2.0, 1.0, 1.0, 3.9, 4.5, 9.0]
  assert lr_range.stop_index(losses, beta=0.0, stop_factor=4.0) == 6
  assert lr_range.stop_index([1.0, math.nan, 1.0], 0.0, 4.0) == 2
  assert lr_range.stop_index([1.0, 1.0, 1.0], 0.0, 4.0) == 3


def test_range_test_stops_where_gradient_descent_diverges():
  """On a quadratic, gradient descent diverges once lr > 2 / lambda_max.

  Hessian eigenvalues 1 and 20, so the edge is 2 / 20 = 0.1; gradients carry
  noise, as minibatch ones do (without it the steep direction decays to
  nothing before the edge and shows its instability only decades later).
  With 250 rates a decade, the moving average's lag (~50 steps) is a fifth
  of a decade: the test must stop within a factor of 2 above the edge.
  """
  hessian = jnp.diag(jnp.array([1.0, 20.0]))
  loss = lambda w: 0.5 * w @ hessian @ w
  grad = jax.jit(jax.grad(loss))
  num_steps = 1000
  rates = lr_range.rates(1e-3, 10.0, num_steps)
  for seed in range(3):
    noise = np.random.default_rng(seed).normal(0, 0.1, (num_steps, 2))
    average = lr_range.SmoothedLoss(beta=0.98, stop_factor=4.0)
    w = jnp.array([1.0, 1.0])
    for rate, step_noise in zip(rates, noise):
      if average.add(float(loss(w))):
        break
      w = w - rate * (grad(w) + step_noise)
    stopped_at = rates[len(average.values) - 1]
    assert 0.1 < stopped_at < 0.2, (seed, stopped_at)


def test_loss_drop_is_from_the_start_to_the_minimum():
  # Trimmed points 3-25; the first tenth (2 points) are 2.0; the minimum 0.8.
  assert lr_range.loss_drop(LOSSES, num_steps=31) == pytest.approx(0.6)


def test_recommendation_is_the_median_of_informative_seeds_minimum_div_10():
  per_seed = [{'minimum_div_10': r, 'valley': 1.0, 'steepest': 1.0}
              for r in (1e-4, 4e-4, 2e-4, 1e-9)]
  # The last seed's loss barely fell: its minimum is noise, left out.
  rate, reason = lr_range.recommend(per_seed, [0.3, 0.2, 0.25, 0.05],
                                    bounds=[3e-3] * 4)
  assert rate == pytest.approx(2e-4)
  assert 'median of 3 of 4 seeds' in reason and '4x' in reason
  assert lr_range.spread([1e-4, 4e-4, 2e-4]) == pytest.approx(4.0)


def test_a_flat_curve_falls_back_to_the_curvature_bound():
  per_seed = [{'minimum_div_10': r} for r in (1e-9, 1e-3)]
  rate, reason = lr_range.recommend(per_seed[:1], [0.05], bounds=[0.06])
  assert rate == pytest.approx(0.006)
  assert 'fell at most 5%' in reason and 'curvature bound' in reason
  # Over seeds: the median of each seed's bound, and how far apart they are.
  rate, reason = lr_range.recommend(per_seed, [0.05, 0.1], bounds=[0.02, 0.08])
  assert rate == pytest.approx(0.004)
  assert "median of 2 seeds' bounds, which spread it 4x" in reason
  rate, reason = lr_range.recommend(per_seed, [0.05, 0.1],
                                    bounds=[None, None])
  assert rate is None and 'no curvature bound' in reason


def test_too_short_a_test_is_a_clear_error():
  with pytest.raises(ValueError, match='too early for a suggestion'):
    lr_range.suggestions(RATES[:8], LOSSES[:8], num_steps=31)
