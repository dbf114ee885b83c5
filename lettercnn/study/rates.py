"""The study's grid of learning rates, and its runs' folder names."""

import math
from typing import Sequence

import numpy as np

from lettercnn import errors

# Significant digits a grid rate keeps: names and configs show it exactly.
DIGITS = 3


def rounded(rate: float) -> float:
  return float(f'{rate:.{DIGITS}g}')


def check_rates(rates: Sequence[float], what: str) -> None:
  """Refuses an empty grid, or one a float32 learning rate cannot hold.

  Raises:
    errors.InputError: naming the first bad rate.
  """
  if not rates:
    raise errors.InputError(f'{what} holds no rates')
  tiny = float(np.finfo(np.float32).tiny)
  largest = float(np.finfo(np.float32).max)
  for rate in rates:
    if not (math.isfinite(rate) and tiny <= rate <= largest):
      raise errors.InputError(
          f'{what} holds {rate:g}, which is not a positive float32 learning '
          f'rate (between {tiny:.3g} and {largest:.3g})')
  if len(set(rates)) < len(rates):
    raise errors.InputError(f'{what} lists a rate more than once')


def log_grid(centre: float, decades: float, per_decade: int) -> list[float]:
  """Rates 10^(i / per_decade), `decades` either side of the one nearest
  `centre` (on a log scale), rounded to `DIGITS` digits; increasing.

  On this lattice, grids around different centres share their rates (1e-4,
  2.15e-4, 4.64e-4, ... at three a decade), so studies can be compared.
  """
  middle = round(math.log10(centre) * per_decade)
  reach = int(round(decades * per_decade))
  rates = [rounded(10 ** ((middle + i) / per_decade))
           for i in range(-reach, reach + 1)]
  check_rates(rates, f'the grid {decades:g} decades either side of '
              f'{centre:.3g}')
  return rates


def run_name(rate: float, seed_index: int = 0) -> str:
  """'lr_2.15e-04' for the search's run, 'lr_2.15e-04,seed=1' for another."""
  name = f'lr_{rate:.{DIGITS - 1}e}'
  return name if seed_index == 0 else f'{name},seed={seed_index}'
