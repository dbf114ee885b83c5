"""A sweep's runs grouped into points: runs that differ only by their seed.

One point is one setting of the swept fields (learning rate, batch size, any
other grid field); its runs are its seeds. The report gives each point the
number of runs and of diverged ones, and mean, standard deviation and range of
final training accuracy and of best validation accuracy, and picks the best
point on mean best validation accuracy, so that a single lucky run cannot win
the sweep.
"""

import collections
import dataclasses
import json
import math
import re
from collections.abc import Sequence

import numpy as np

from lettercnn.sweep import runs as report_runs
from lettercnn.run import status as run_status

# The seed part of a sweep point's name (scripts/sweep.sh: `...,seed=2`).
_SEED_IN_NAME = re.compile(r',seed=\d+')
# Fields a point has apart from its settings: they label rows and columns.
_AXES = ('learning_rate', 'batch_size', 'seed')
BEST_POINT_RULE = (
    'the highest mean best validation accuracy among points none of whose '
    'runs diverged; ties go to the higher mean final training accuracy, then '
    'to the larger learning rate')


@dataclasses.dataclass(frozen=True)
class Stats:
  """Mean, sample standard deviation and range of a few values."""
  mean: float
  std: float
  low: float
  high: float
  count: int

  @classmethod
  def of(cls, values: Sequence[float]) -> 'Stats | None':
    """None without values; std 0 for a single one."""
    if not values:
      return None
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return cls(float(array.mean()), std, float(array.min()),
               float(array.max()), int(array.size))


@dataclasses.dataclass(frozen=True)
class Point:
  """The runs of one setting of the swept fields, one per seed."""
  name: str
  learning_rate: float | None
  batch_size: int | None
  # The other swept fields, (field, value) sorted by field.
  settings: tuple[tuple[str, object], ...]
  runs: tuple[report_runs.RunSummary, ...]

  @property
  def num_diverged(self) -> int:
    return sum(run.diverged for run in self.runs)

  @property
  def all_diverged(self) -> bool:
    return self.num_diverged == len(self.runs)

  @property
  def all_converged(self) -> bool:
    return all(run.status == run_status.CONVERGED for run in self.runs)

  @property
  def final_train_accuracy(self) -> Stats | None:
    return Stats.of([run.final_train_accuracy for run in self.runs
                     if _is_finite(run.final_train_accuracy)])

  @property
  def best_val_accuracy(self) -> Stats | None:
    return Stats.of([run.best_val_accuracy for run in self.runs
                     if _is_finite(run.best_val_accuracy)])

  @property
  def seeds(self) -> list[object]:
    return [(run.config or {}).get('seed') for run in self.runs]


def _is_finite(value: float | None) -> bool:
  return value is not None and math.isfinite(value)


def _canonical(value: object) -> str:
  return json.dumps(value, sort_keys=True)


def varying_fields(runs: Sequence[report_runs.RunSummary]) -> list[str]:
  """Config fields (seed aside) that differ between runs, sorted."""
  values = collections.defaultdict(set)
  for run in runs:
    for field, value in (run.config or {}).items():
      values[field].add(_canonical(value))
  return sorted(field for field, seen in values.items()
                if len(seen) > 1 and field != 'seed')


def group_points(runs: Sequence[report_runs.RunSummary]) -> list[Point]:
  """Groups runs whose configs differ only in `seed` into points.

  A run without a config (no status.json yet) joins the runs of its name less
  `,seed=N`. Points are sorted by their other settings, then batch size, then
  largest learning rate first; runs within a point by seed.
  """
  settings_fields = [f for f in varying_fields(runs) if f not in _AXES]
  groups: dict[str, list[report_runs.RunSummary]] = collections.defaultdict(list)
  for run in runs:
    if run.config:
      key = _canonical({k: v for k, v in run.config.items() if k != 'seed'})
    else:
      key = 'name:' + _SEED_IN_NAME.sub('', run.name)
    groups[key].append(run)
  points = []
  for members in groups.values():
    members.sort(key=lambda run: (str((run.config or {}).get('seed')),
                                  run.name))
    config = next((run.config for run in members if run.config), {})
    batch_size = config.get('batch_size')
    points.append(Point(
        name=_SEED_IN_NAME.sub('', members[0].name),
        learning_rate=members[0].learning_rate,
        batch_size=batch_size if isinstance(batch_size, int) else None,
        settings=tuple((f, config.get(f)) for f in settings_fields),
        runs=tuple(members)))
  return sorted(points, key=lambda p: (
      _canonical(p.settings), p.batch_size is None, p.batch_size or 0,
      p.learning_rate is None, -(p.learning_rate or 0.0), p.name))


def _rank(point: Point) -> tuple[float, float, float]:
  train = point.final_train_accuracy
  return (point.best_val_accuracy.mean, train.mean if train else -1.0,
          point.learning_rate or 0.0)


def ranked_points(points: Sequence[Point]) -> list[Point]:
  """Points that may win (no run diverged, every run validated), best first."""
  eligible = [p for p in points if p.num_diverged == 0
              and p.best_val_accuracy is not None
              and p.best_val_accuracy.count == len(p.runs)]
  return sorted(eligible, key=_rank, reverse=True)


def best_by_seed(points: Sequence[Point]) -> dict[object, Point]:
  """For each seed, the point whose run of that seed validated best.

  Only points that ran that seed and did not diverge with it compete; ties go
  as in BEST_POINT_RULE.
  """
  candidates = collections.defaultdict(list)
  for point in points:
    for run in point.runs:
      if not run.diverged and _is_finite(run.best_val_accuracy):
        seed = (run.config or {}).get('seed')
        candidates[seed].append((run.best_val_accuracy,
                                 run.final_train_accuracy or -1.0,
                                 point.learning_rate or 0.0, point))
  return {seed: max(entries, key=lambda e: e[:3])[3]
          for seed, entries in candidates.items()}


@dataclasses.dataclass(frozen=True)
class BatchSizeVerdict:
  """What the sweep says at one batch size (and setting of other fields)."""
  batch_size: int | None
  settings: tuple[tuple[str, object], ...]
  best: Point | None
  # The largest learning rate at which every seed converged.
  largest_converged: float | None
  # The smallest learning rate at which some seed diverged.
  smallest_diverged: float | None


def by_batch_size(points: Sequence[Point]) -> list[BatchSizeVerdict]:
  """The best point and the edges of the workable rates, per batch size."""
  rows = collections.defaultdict(list)
  for point in points:
    rows[(_canonical(point.settings), point.batch_size)].append(point)
  verdicts = []
  for (_, batch_size), members in sorted(
      rows.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
    ranked = ranked_points(members)
    converged = [p.learning_rate for p in members
                 if p.all_converged and p.learning_rate is not None]
    diverged = [p.learning_rate for p in members
                if p.num_diverged and p.learning_rate is not None]
    verdicts.append(BatchSizeVerdict(
        batch_size=batch_size, settings=members[0].settings,
        best=ranked[0] if ranked else None,
        largest_converged=max(converged) if converged else None,
        smallest_diverged=min(diverged) if diverged else None))
  return verdicts
