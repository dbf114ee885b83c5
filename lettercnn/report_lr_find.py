"""A sweep's range tests and curvature bounds, beside the rates the sweep found.

`python -m lettercnn.lr_find --workdir=SWEEP_DIR/lr_find ...` puts a range
test inside a sweep directory; the report reads every `lr_find.json` there
(such a folder is not a training run), and every run whose status.json has
a sharpness at initialisation (`sharpness_every_steps` > 0), and sets their
predictions next to the sweep's best rate and its edges, per batch size.
"""

import json
import pathlib
from typing import Any, Sequence

from lettercnn import lr_range
from lettercnn import report_runs
from lettercnn import sweep_points


def is_range_test(path: pathlib.Path) -> bool:
  """Whether `path` holds an LR range test's result rather than a run."""
  return (path / lr_range.RESULT_FILE).is_file()


def load(sweep_dir: pathlib.Path) -> list[tuple[str, dict[str, Any]]]:
  """(folder name, lr_find.json) of each range test in `sweep_dir`'s folders."""
  tests = []
  for path in sorted(p for p in sweep_dir.iterdir() if is_range_test(p)):
    with open(path / lr_range.RESULT_FILE) as f:
      tests.append((path.name, json.load(f)))
  return tests


def _rate(rate: float | None) -> str:
  return '-' if rate is None else f'{rate:.2g}'


def _test_line(name: str, found: dict[str, Any]) -> str:
  seeds = len(found['seeds'])
  spread = (f' (max/min over {seeds} seeds: ' + ', '.join(
      f'{found["spread"][k]:.2g}x' for k in lr_range.SUGGESTIONS) + ')'
            if seeds > 1 else '')
  sharp = found['sharpness']
  line = (f'- Range test `{name}`: recommended {_rate(found["recommended"])}; '
          + ', '.join(f'{k} {_rate(v)}' for k, v in found['suggestions'].items())
          + f'{spread}. Curvature bound at initialisation '
          f'{_rate(sharp["bound"])} (lambda_max {sharp["lambda_max"]:.4g} over '
          f'{sharp["examples"]} images, {sharp["formula"]})')
  if sharp.get('batch_bound') is not None:
    line += f', per-example {_rate(sharp["batch_bound"])}'
  return line + '.'


def _run_bound_line(run: report_runs.RunSummary) -> str | None:
  initial = run.initial_sharpness
  if not initial:
    return None
  return (f'- Run `{run.name}`: sharpness at initialisation '
          f'{initial["lambda_max"]:.4g}, bound {_rate(initial["bound"])} '
          f'({initial["formula"]}).')


def section(sweep_dir: pathlib.Path, runs: Sequence[report_runs.RunSummary],
            points: Sequence[sweep_points.Point]) -> list[str]:
  """summary.md's (and the printed) lines on range tests and bounds, or []."""
  lines = [_test_line(name, found) for name, found in load(sweep_dir)]
  lines += filter(None, map(_run_bound_line, runs))
  if not lines:
    return []
  sweep = ['- The sweep' + (f' at batch size {v.batch_size}'
                            if v.batch_size is not None else '') +
           f': best rate {_rate(v.best.learning_rate if v.best else None)}, '
           'largest rate every seed converged at '
           f'{_rate(v.largest_converged)}, smallest a seed diverged at '
           f'{_rate(v.smallest_diverged)}.'
           for v in sweep_points.by_batch_size(points)]
  return ['## Range test and curvature bound', '', *lines, *sweep, '']
