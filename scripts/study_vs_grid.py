"""A study's answer beside the full grid's, as docs/study.md shows them:

  python scripts/study_vs_grid.py STUDY_DIR GRID_DIR [--label NAME]

GRID_DIR holds the study's rates, each trained to the end (one run folder a
rate, seed 0, as `scripts/sweep.sh GRID_DIR --grid learning_rate=...` makes).
The grid's best rate is its run with the highest best validation accuracy;
its edge comes from the study's own rule (`halving.edge`). Prints one
markdown table row each for the grid and the study, and the checks: the same
best rate or one within the study's seed spread, the same edge, the search's
and the whole study's share of the grid's training steps.
"""

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top
from lettercnn import formats
from lettercnn.run import status as run_status
from lettercnn.study import halving
from lettercnn.study import run as study_run
# pylint: enable=g-import-not-at-top

_LABEL = flags.DEFINE_string('label', '', 'The setup, for the rows.')


def grid_trials(grid_dir: str) -> tuple[list[halving.Trial], list[dict]]:
  """The grid's runs as trials, and their statuses."""
  trials, statuses = [], []
  for name in sorted(os.listdir(grid_dir)):
    run_dir = os.path.join(grid_dir, name)
    status = run_status.read(run_dir) if os.path.isdir(run_dir) else None
    if status is None:
      continue
    if status['status'] not in run_status.FINISHED:
      raise SystemExit(f'{run_dir} is not finished ({status["status"]})')
    trials.append(halving.Trial(
        name, status['config']['learning_rate'], 0,
        study_run.val_accuracies(run_dir, status), status['status']))
    statuses.append(status)
  return trials, statuses


def main(argv: list[str]) -> None:
  if len(argv) != 3:
    raise app.UsageError('usage: study_vs_grid.py STUDY_DIR GRID_DIR')
  study_dir, grid_dir = argv[1:]
  with open(os.path.join(study_dir, 'study.json')) as f:
    study = json.load(f)
  trials, statuses = grid_trials(grid_dir)
  if sorted(t.rate for t in trials) != sorted(study['learning_rates']):
    raise SystemExit(f'{grid_dir} does not hold the study\'s rates')
  num_epochs = study['num_epochs']
  chance = 1.0 / statuses[0]['num_classes']
  margin = statuses[0]['config']['not_converged_margin_points']
  best = max(trials, key=lambda t: (t.best(num_epochs), -t.rate))
  converged, failed, _ = halving.edge(trials, best.rate, chance, margin)
  steps = sum(s['step'] for s in statuses)
  wall = sum(s['wall_time_s'] for s in statuses)
  accuracy = {t.rate: t.best(num_epochs) for t in trials}
  seeds = study['best_val_accuracy']['seeds']
  rate = formats.rate
  label = f'{_LABEL.value}: ' if _LABEL.value else ''
  nominal = study['steps_full_grid']

  def share(count: int) -> str:
    return f'{count:,} ({count / nominal:.0%})'

  print('| | best rate (best val. accuracy) | every run converged up to | '
        'smallest failed rate | training steps (share of 13 x 30 epochs) | '
        'of which the search | time training |')
  print('| --- | --- | --- | --- | ---: | ---: | ---: |')
  print(f'| {label}full grid | {rate(best.rate)} ({100 * accuracy[best.rate]:.1f}%) '
        f'| {rate(converged)} | {rate(failed)} | {share(steps)} | | '
        f'{wall / 60:.0f} min |')
  print(f'| {label}study | {rate(study["best_learning_rate"])} '
        f'({100 * study["best_val_accuracy"]["mean"]:.1f}% ± '
        f'{100 * study["best_val_accuracy"]["std"]:.1f}, {len(seeds)} seeds) '
        f'| {rate(study["largest_converged_rate"])} | '
        f'{rate(study["smallest_failed_rate"])} | '
        f'{share(study["steps_trained"])} | {share(study["steps_search"])} | '
        f'{study["wall_time_s"] / 60:.0f} min |')
  same_best = study['best_learning_rate'] == best.rate
  gap = accuracy[best.rate] - accuracy.get(study['best_learning_rate'], 0)
  spread = max(seeds) - min(seeds)
  print()
  print(f'- best rate: {"the same" if same_best else "different"}; the '
        f'grid\'s best is {100 * gap:.2f} points above its run at the '
        f'study\'s rate, against a seed spread (max - min) of '
        f'{100 * spread:.2f} points at the study\'s rate')
  print(f'- edge: {"the same" if (converged, failed) == (study["largest_converged_rate"], study["smallest_failed_rate"]) else "DIFFERENT"}')
  print(f'- search: {study["steps_search"]:,} steps = '
        f'{study["steps_search"] / nominal:.1%} of the full grid\'s '
        f'{nominal:,} (13 rates x {num_epochs} epochs), '
        f'{study["steps_search"] / steps:.1%} of the {steps:,} it trained '
        '(diverged runs stop early)')
  print(f'- whole study (range test and confirmation included): '
        f'{study["steps_trained"]:,} steps = '
        f'{study["steps_trained"] / nominal:.1%} of {nominal:,}, '
        f'{study["steps_trained"] / steps:.1%} of {steps:,}')


if __name__ == '__main__':
  app.run(main)
