"""The LR range test's curve: its rates, its smoothing, its stop and suggestions.

Pure functions of the recorded losses (no model, no JAX), so that every
suggestion can be checked on a stored curve. The test raises the rate
exponentially, `rates(min_lr, max_lr, num_steps)`, one training step at
each; the losses are smoothed by a bias-corrected exponential moving
average; the test stops once the smoothed loss is not finite or passes
`stop_factor` times its minimum so far.

The suggestions follow fastai's `lr_find`, which, like it, look at the
smoothed curve less its first num_steps // 10 points and its last 5 (the
warm-up of the average and the blow-up):

* valley: fastai's: the longest stretch over which the loss keeps falling
  (a longest decreasing subsequence), and the point ~half-way through it;
* steepest: the steepest fall of the smoothed loss per unit of log(rate);
* minimum / 10: the rate of the smoothed minimum, divided by 10.
"""

import dataclasses
import math
from typing import Sequence

import numpy as np

from lettercnn import errors

SUGGESTIONS = ('valley', 'steepest', 'minimum_div_10')
# What lettercnn.lr_find writes into its workdir (and the report looks for).
RESULT_FILE = 'lr_find.json'


def rates(min_lr: float, max_lr: float, num_steps: int) -> np.ndarray:
  """The rate of each step: `min_lr` to `max_lr`, evenly spaced in log."""
  return np.geomspace(min_lr, max_lr, num_steps)


class SmoothedLoss:
  """The bias-corrected exponential moving average of a stream of losses.

  avg_i = beta avg_(i-1) + (1 - beta) loss_i, avg_-1 = 0, reported as
  avg_i / (1 - beta^(i+1)) (fastai's), so the first points are not pulled
  towards 0. `add` says whether the test stops at this point: the smoothed
  loss is not finite, or exceeds `stop_factor` times the smallest smoothed
  loss before it. The stopping point is kept, so the blow-up shows.
  """

  def __init__(self, beta: float, stop_factor: float = math.inf):
    self._beta, self._stop_factor = beta, stop_factor
    self._average, self._best = 0.0, math.inf
    self.values: list[float] = []

  def add(self, loss: float) -> bool:
    """Records `loss`; True if the test stops here."""
    self._average = self._beta * self._average + (1 - self._beta) * loss
    value = self._average / (1 - self._beta**(len(self.values) + 1))
    stop = not math.isfinite(value) or (
        bool(self.values) and value > self._stop_factor * self._best)
    self.values.append(value)
    self._best = min(self._best, value)
    return stop


def smoothed(losses: Sequence[float], beta: float) -> np.ndarray:
  """`SmoothedLoss`'s values for all of `losses`."""
  average = SmoothedLoss(beta)
  for loss in losses:
    average.add(loss)
  return np.asarray(average.values, np.float64)


def stop_index(losses: Sequence[float], beta: float,
               stop_factor: float) -> int:
  """How many of `losses` a test keeps: up to and with its stopping point."""
  average = SmoothedLoss(beta, stop_factor)
  for i, loss in enumerate(losses):
    if average.add(loss):
      return i + 1
  return len(losses)


class TooShort(errors.InputError):
  """The test stopped before fastai's view of its curve has two points.

  Bad input, not a failure: the config's `lr_find.min_lr` starts the rates
  too high for this model and data, and a lower one is the remedy.
  """


def _trimmed(rates_: np.ndarray, losses: np.ndarray,
             num_steps: int) -> tuple[np.ndarray, np.ndarray]:
  """fastai's view of the curve: less num_steps // 10 points and the last 5."""
  start, end = num_steps // 10, len(losses) - 5
  if end - start < 2:
    raise TooShort(f'the test stopped after {len(losses)} of {num_steps} '
                     'steps, too early for a suggestion: lower min_lr')
  return rates_[start:end], losses[start:end]


def valley(rates_: np.ndarray, losses: np.ndarray) -> float:
  """fastai's valley: a point ~half-way along the longest falling stretch.

  The stretch is a longest strictly decreasing subsequence, from its start
  `max_start` to its end `max_end`; the rate returned is at
  max_start + int(len/3) + int(len/6), len = max_end - max_start, as fastai
  computes it.
  """
  n = len(losses)
  lds = [1] * n
  max_start = max_end = 0
  for i in range(1, n):
    for j in range(i):
      if losses[i] < losses[j] and lds[i] < lds[j] + 1:
        lds[i] = lds[j] + 1
      if lds[max_end] < lds[i]:
        max_end = i
        max_start = max_end - lds[max_end]
  sections = (max_end - max_start) / 3
  return float(rates_[max_start + int(sections) + int(sections / 2)])


def steepest(rates_: np.ndarray, losses: np.ndarray) -> float:
  """The rate where d loss / d log(rate) is most negative (left end of it)."""
  slopes = np.diff(losses) / np.diff(np.log(rates_))
  return float(rates_[int(np.argmin(slopes))])


def minimum_div_10(rates_: np.ndarray, losses: np.ndarray) -> float:
  """The rate of the smallest smoothed loss, divided by 10."""
  return float(rates_[int(np.argmin(losses))] / 10)


def suggestions(rates_: Sequence[float], smoothed_losses: Sequence[float],
                num_steps: int) -> dict[str, float]:
  """Every suggestion of `SUGGESTIONS` on the recorded (stopped) curve."""
  trimmed = _trimmed(np.asarray(rates_, np.float64),
                     np.asarray(smoothed_losses, np.float64), num_steps)
  return {'valley': valley(*trimmed), 'steepest': steepest(*trimmed),
          'minimum_div_10': minimum_div_10(*trimmed)}


@dataclasses.dataclass(frozen=True)
class Curve:
  """One range test's record, as lr_find.json stores it."""
  rates: list[float]
  losses: list[float]
  smoothed: list[float]
  suggestions: dict[str, float]


def analyse(losses: Sequence[float], rates_: Sequence[float], *,
            beta: float, stop_factor: float, num_steps: int) -> Curve:
  """Smooths `losses`, cuts them at the stop, and suggests rates."""
  kept = stop_index(losses, beta, stop_factor)
  smooth = smoothed(losses[:kept], beta)
  return Curve(rates=[float(r) for r in rates_[:kept]],
               losses=[float(x) for x in losses[:kept]],
               smoothed=[float(x) for x in smooth],
               suggestions=suggestions(rates_[:kept], smooth, num_steps))


def spread(values: Sequence[float]) -> float:
  """max / min of positive `values`: how far apart seeds put a suggestion."""
  return float(max(values) / min(values))


def median_rate(values: Sequence[float]) -> float:
  """The median of rates, taken in log (the geometric one for an even count)."""
  return float(np.exp(np.median(np.log(np.asarray(values, np.float64)))))


# A test whose smoothed loss falls less than this (a fraction of its level
# at the start) learned nothing its suggestions could come from: the TF
# LeNet's tests fell 3-10%, the Caffe LeNet's 20-32% (README).
MIN_DROP = 0.15
# Where no test is informative, a decade below the curvature bound.
BOUND_DIVISOR = 10.0


def loss_drop(smoothed_losses: Sequence[float], num_steps: int) -> float:
  """How far the smoothed loss falls, as a fraction of where it starts.

  On fastai's view of the curve: from the median of its first tenth (the
  start, less the noise of single points) to its minimum.
  """
  _, losses = _trimmed(np.arange(len(smoothed_losses), dtype=np.float64),
                       np.asarray(smoothed_losses, np.float64), num_steps)
  start = float(np.median(losses[:max(1, len(losses) // 10)]))
  return (start - float(np.min(losses))) / start


def recommend(per_seed: Sequence[dict[str, float]], drops: Sequence[float],
              bounds: Sequence[float | None]) -> tuple[float | None, str]:
  """The rate to train at, over one or more seeds' tests, and why.

  fastai's conservative rule, minimum / 10, for the tests whose loss fell by
  MIN_DROP or more: the smoothed loss reaches its minimum only just before
  it blows up, and a run far longer than the test meets instability sooner
  (sharpness grows as it trains), so the valley and the steepest fall, which
  sit within a few times the blow-up, are too close to the edge. Over
  several seeds, the median of theirs. If no test's loss fell that far, the
  suggestions are noise on a flat curve: then the median over the seeds of
  the curvature bound at each one's initialisation (`bounds`, None for a
  solver without one), / BOUND_DIVISOR; None without a bound.
  """
  informative = [s['minimum_div_10'] for s, drop in zip(per_seed, drops)
                 if drop >= MIN_DROP]
  if informative:
    reason = ('minimum / 10: a decade below the smoothed minimum, which comes '
              'just before the blow-up')
    if len(per_seed) > 1:
      reason += (f'; median of {len(informative)} of {len(per_seed)} seeds, '
                 f'which spread it {spread(informative):.2g}x')
    return median_rate(informative), reason
  flat = (f'the loss fell at most {max(drops):.0%} during the test (under '
          f'{MIN_DROP:.0%}): its suggestions are noise on a flat curve')
  known = [bound for bound in bounds if bound is not None]
  if not known:
    return None, flat + ', and the solver has no curvature bound'
  reason = f'{flat}; a decade below the curvature bound instead'
  if len(known) > 1:
    reason += (f' (median of {len(known)} seeds\' bounds, which spread it '
               f'{spread(known):.2g}x)')
  return median_rate(known) / BOUND_DIVISOR, reason
