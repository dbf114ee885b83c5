"""How the commands print numbers: one formatter per kind of number.

`rate` prints learning rates (sweep report, tables and plots, lr_find);
`percent` prints accuracies and other fractions (sweep report, classify).
"""

import math


def rate(value: float | None, missing: str = '-',
         digits: int | None = None) -> str:
  """A learning rate as text; `missing` when there is none.

  Without `digits`: compact scientific notation as in the config names, to
  at most 4 significant digits (0.0001 -> '1e-4', 0.0025 -> '2.5e-3'; zero,
  negative and non-finite values as Python's 'g' format prints them). With
  `digits`: that many significant digits in Python's 'g' format (digits=2:
  0.00031 -> '0.00031', 3.1e-05 -> '3.1e-05').
  """
  if value is None:
    return missing
  if digits is not None:
    return f'{value:.{digits}g}'
  if value <= 0 or not math.isfinite(value):
    return f'{value:g}'
  mantissa, exponent = f'{value:.3e}'.split('e')
  return f'{float(mantissa):g}e{int(exponent)}'


def percent(value: float | None) -> str:
  """A fraction as a percentage to one decimal (0.8734 -> '87.3%'); '-' for
  None."""
  return '-' if value is None else f'{100 * value:.1f}%'
