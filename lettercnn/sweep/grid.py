"""The points of a sweep: configs x grids x seeds, each checked before any run.

The sweep launcher (`lettercnn.sweep.launch`, behind `scripts/sweep.sh`) asks
`sweep_points` which runs a sweep holds; on the command line

  python -m lettercnn.sweep.grid [--grid=FIELD=V1,V2,...]... [--seeds=N|S1,S2,...]
      [--override=--config.FIELD=VALUE]... CONFIG...

prints one line per point, tab-separated: the point's name (its workdir in
the sweep folder), its config file, then the overrides that make the point.
Points are the Cartesian product of the configs and the grids, in that order
(configs outermost, seeds innermost). The name is the config file's stem and
each grid value, e.g. `lr_1e-4,batch_size=8,seed=2`, so that a person can
read it and TensorBoard shows it; without grids or seeds it is the stem alone,
as sweeps always named their runs.

Every point is parsed with lettercnn.main's own flag parsing and checked by
`config_checks.check_config`, so a bad grid (an unknown field, a value its
field does not take, an empty list) is one error line, exit status 2, before
the sweep starts anything.
"""

import collections
import difflib
import itertools
import os
import re
from typing import NamedTuple, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections

from lettercnn import config_checks
from lettercnn import config_loading
from lettercnn import errors


def _define_flags() -> None:
  """The command line's flags; defined only when this module is the command,
  so that importing it leaves the importer's flags alone."""
  flags.DEFINE_multi_string(
      'grid', [], 'FIELD=V1,V2,...: values of one config field to sweep '
      '(commas inside (), [] or quotes do not split).')
  flags.DEFINE_string(
      'seeds', None, 'N (seeds 0 ... N-1) or a comma-separated list of seeds '
      '(one seed: --grid=seed=S).')
  flags.DEFINE_multi_string(
      'override', [], 'A --config.FIELD=VALUE given to every point.')


class Run(NamedTuple):
  """One run of a sweep: its folder's name, config file and overrides."""
  name: str
  config_path: str
  overrides: tuple[str, ...]


def split_values(text: str) -> list[str]:
  """Splits `text` at commas outside brackets and quotes: '(1,2),3' -> 2."""
  values, current, depth, quote = [], [], 0, None
  for char in text:
    if quote:
      quote = None if char == quote else quote
    elif char in '\'"':
      quote = char
    elif char in '([{':
      depth += 1
    elif char in ')]}':
      depth -= 1
    elif char == ',' and depth == 0:
      values.append(''.join(current))
      current = []
      continue
    current.append(char)
  values.append(''.join(current))
  return values


def parse_grid(spec: str) -> tuple[str, list[str]]:
  """'batch_size=1,8' -> ('batch_size', ['1', '8']); InputError if malformed."""
  field, sep, text = spec.partition('=')
  field = field.strip()
  if not sep or not field:
    raise errors.InputError(
        f'--grid {spec!r} must look like FIELD=V1,V2,... (e.g. '
        'batch_size=1,8,32)')
  values = [v.strip() for v in split_values(text)]
  if not any(values):
    raise errors.InputError(f'--grid {field}= gives no values')
  if not all(values):
    raise errors.InputError(f'--grid {spec!r} has an empty value')
  repeated = [v for v, n in collections.Counter(values).items() if n > 1]
  if repeated:
    raise errors.InputError(
        f'--grid {field} lists {repeated[0]!r} more than once')
  for value in values:
    if any(c in value for c in '\t\n\r'):
      raise errors.InputError(
          f'--grid {field} value {value!r} holds a tab or line break')
  return field, values


def parse_seeds(spec: str) -> list[str]:
  """'3' -> ['0', '1', '2']; '0,3,7' -> ['0', '3', '7']."""
  items = [s.strip() for s in spec.split(',')]
  if not all(re.fullmatch(r'\d+', s) for s in items):
    raise errors.InputError(
        f'--seeds {spec!r} must be a count N or a list of seeds like 0,3,7')
  if len(items) == 1:
    count = int(items[0])
    if count < 1:
      raise errors.InputError(f'--seeds {spec} must be at least 1')
    return [str(s) for s in range(count)]
  if len(set(map(int, items))) < len(items):
    raise errors.InputError(f'--seeds {spec} lists a seed more than once')
  return [str(int(s)) for s in items]


def _override_field(override: str) -> str:
  return override.split('=', 1)[0].removeprefix('--config.')


def _point_name(stem: str, assignment: Sequence[tuple[str, str]]) -> str:
  """The stem and each FIELD=VALUE, a path separator made an underscore."""
  parts = [stem] + [f'{field}={value}' for field, value in assignment]
  return ','.join(parts).replace(os.sep, '_')


def _check_fields(config: ml_collections.ConfigDict, fields: Sequence[str],
                  fixed: Sequence[str]) -> None:
  """Unknown grid fields, and grid fields the fixed overrides also set."""
  for field in fields:
    if field not in config:
      close = difflib.get_close_matches(field, list(config.keys()), n=1)
      hint = f'; did you mean {close[0]}?' if close else ''
      raise errors.InputError(
          f'--grid {field}: unknown config field (see configs/default.py)'
          f'{hint}')
  fixed_fields = {_override_field(o) for o in fixed}
  for field in fields:
    if field in fixed_fields:
      raise errors.InputError(
          f'{field} is both swept (--grid or --seeds) and fixed '
          f'(--config.{field}=...); give it one way')


def sweep_points(config_paths: Sequence[str], grid_specs: Sequence[str],
                 seeds: str | None, fixed: Sequence[str]) -> list[Run]:
  """Every point of the sweep, each checked as lettercnn.main would check it.

  Raises:
    errors.InputError: a bad grid, seed list, config file or value, naming
      the point it breaks.
  """
  if not config_paths:
    raise errors.InputError('no configs to sweep')
  grids = [parse_grid(spec) for spec in grid_specs]
  if seeds is not None:
    grids.append(('seed', parse_seeds(seeds)))
  fields = [field for field, _ in grids]
  for field, count in collections.Counter(fields).items():
    if count > 1:
      source = ('--grid seed and --seeds' if field == 'seed'
                else f'--grid {field}')
      raise errors.InputError(f'{source} given more than once; give one list')
  stems = [os.path.splitext(os.path.basename(p))[0] for p in config_paths]
  for stem, count in collections.Counter(stems).items():
    if count > 1:
      raise errors.InputError(f'two configs named {stem}')
  points = []
  for config_path, stem in zip(config_paths, stems):
    base = config_loading.load_config(config_path, list(fixed))
    _check_fields(base, fields, fixed)
    for values in itertools.product(*(v for _, v in grids)):
      assignment = list(zip(fields, values))
      overrides = tuple(f'--config.{f}={v}' for f, v in assignment)
      name = _point_name(stem, assignment)
      try:
        config_checks.check_config(
            config_loading.load_config(config_path, [*fixed, *overrides]))
      except errors.InputError as e:
        raise errors.InputError(f'{name}: {e}') from e
      points.append(Run(name, config_path, overrides))
  names = [p.name for p in points]
  for name, count in collections.Counter(names).items():
    if count > 1:
      raise errors.InputError(f'two points are both named {name}')
  return points


def main(argv: list[str]) -> None:
  # JAX's "no GPU/TPU found" warning would precede every sweep's first line.
  logging.set_verbosity(logging.ERROR)
  try:
    points = sweep_points(argv[1:], flags.FLAGS.grid, flags.FLAGS.seeds,
                          flags.FLAGS.override)
  except errors.InputError as e:
    errors.fail('sweep', e)
  for point in points:
    print('\t'.join([point.name, point.config_path, *point.overrides]))


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=config_loading.flags_parser('sweep'))
