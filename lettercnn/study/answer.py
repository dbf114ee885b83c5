"""A finished study's answer: DIR/study.json, DIR/study.md and DIR/study.png.

This module is the one writer of the three files. study.json holds every
number study.md states; study.png draws each search run's best validation
accuracy against its rate, marked by how far it trained.
"""

import json
import os
import statistics
from typing import Any, Sequence

from lettercnn import files
from lettercnn import formats
from lettercnn.study import halving

JSON_FILE = 'study.json'
MARKDOWN_FILE = 'study.md'
PLOT_FILE = 'study.png'


def _search_epochs(plan: halving.Plan) -> dict[str, int]:
  """How far the search took each run: the last rung it entered."""
  reached = {}
  for rung in plan.rungs:
    for name in rung.ranked + rung.failed:
      reached[name] = rung.epoch
  return reached


def _outcome(trial: halving.Trial, plan: halving.Plan, num_epochs: int,
             chance: float, margin_points: float) -> str:
  """How the search run ended, in words."""
  if trial.diverged:
    return f'diverged in epoch {trial.epochs + 1}'
  if trial.failed_so_far(chance, margin_points):
    return f'at chance by epoch {trial.epochs}'
  if trial.finished:
    return trial.status.replace('_', ' ')
  for rung in plan.rungs:
    if trial.name in rung.ranked and trial.name not in rung.promoted:
      rank = rung.ranked.index(trial.name) + 1
      return (f'stopped at epoch {trial.epochs} of {num_epochs} (rank {rank} '
              f'of {len(rung.ranked)} at its rung)')
  return f'stopped at epoch {trial.epochs}'


def summarize(plan: halving.Plan, trials: Sequence[halving.Trial],
              statuses: dict[str, Any], grid_rates: Sequence[float],
              range_test: dict[str, Any] | None, settings: dict[str, Any],
              config: Any) -> dict[str, Any]:
  """Everything study.json holds."""
  any_status = next(iter(statuses.values()))
  steps_per_epoch = any_status['steps_per_epoch']
  chance = 1.0 / any_status['num_classes']
  margin = config.not_converged_margin_points
  num_epochs = config.num_epochs
  searched = _search_epochs(plan)
  steps = {name: status['step'] for name, status in statuses.items()}
  steps_search = sum(min(steps[name], epoch * steps_per_epoch)
                     for name, epoch in searched.items())
  steps_runs = sum(steps.values())
  range_steps = range_s = 0
  if range_test is not None:
    range_steps = sum(seed['steps_run'] for seed in range_test['seeds'])
    range_s = range_test['timings_s']['total']
  runs_s = sum(status['wall_time_s'] for status in statuses.values())
  steps_full_grid = len(grid_rates) * num_epochs * steps_per_epoch
  confirmed = plan.confirmed
  runs = []
  for trial in sorted(trials, key=lambda t: (t.rate, t.seed)):
    if trial.name not in statuses:
      continue
    runs.append({
        'name': trial.name, 'learning_rate': trial.rate, 'seed': trial.seed,
        'epochs': trial.epochs, 'status': trial.status,
        'best_val_accuracy': (trial.best(trial.epochs)
                              if trial.val_accuracy else None),
        'steps': steps[trial.name],
        'outcome': _outcome(trial, plan, num_epochs, chance, margin)})
  bound = None
  if range_test is not None:
    over_seeds = range_test.get('bound_over_seeds')
    bound = (over_seeds['median'] if over_seeds and
             len(range_test['seeds']) > 1 else range_test['sharpness']['bound'])
  return {
      'best_learning_rate': plan.best_rate,
      'best_val_accuracy': {
          'mean': statistics.mean(confirmed) if confirmed else None,
          'std': statistics.stdev(confirmed) if len(confirmed) > 1 else 0.0,
          'seeds': confirmed},
      'runner_up': plan.runner_up,
      'confirmed': [{'learning_rate': rate, 'seeds': accuracies,
                     'mean': statistics.mean(accuracies),
                     'std': (statistics.stdev(accuracies)
                             if len(accuracies) > 1 else 0.0)}
                    for rate, accuracies in plan.confirmed_rates.items()],
      'largest_converged_rate': plan.largest_converged_rate,
      'smallest_failed_rate': plan.smallest_failed_rate,
      'range_test_rate': None if range_test is None else
                         range_test['recommended'],
      'range_test_reason': None if range_test is None else range_test['reason'],
      'curvature_bound': bound,
      'steps_trained': steps_runs + range_steps,
      'steps_search': steps_search,
      'steps_confirm': steps_runs - steps_search,
      'steps_range_test': range_steps,
      'steps_full_grid': steps_full_grid,
      'wall_time_s': runs_s + range_s,
      'full_grid_wall_time_s_estimate': (
          runs_s / steps_runs * steps_full_grid if steps_runs else None),
      'learning_rates': list(grid_rates),
      'num_epochs': num_epochs,
      'steps_per_epoch': steps_per_epoch,
      'rungs': [{'epoch': r.epoch, 'ranked': list(r.ranked),
                 'failed': list(r.failed), 'promoted': list(r.promoted)}
                for r in plan.rungs],
      'runs': runs,
      'settings': settings,
  }


def _rate(rate: float | None) -> str:
  return formats.rate(rate, missing='none')


def _hours(seconds: float | None) -> str:
  if seconds is None:
    return 'n/a'
  minutes = seconds / 60
  return f'{minutes:.0f} min' if minutes < 120 else f'{minutes / 60:.1f} h'


def markdown(summary: dict[str, Any]) -> str:
  """study.md: the answer first, then its evidence."""
  best = summary['best_val_accuracy']
  full = summary['steps_full_grid']
  lines = ['# Learning-rate study', '']
  if summary['best_learning_rate'] is None:
    lines.append('**No rate trained**: every run of the grid failed.')
  else:
    spread = (f' ± {100 * best["std"]:.1f}%' if len(best['seeds']) > 1
              else '')
    lines.append(
        f'**Best rate: {_rate(summary["best_learning_rate"])}**, best '
        f'validation accuracy {100 * best["mean"]:.1f}%{spread} '
        f'({len(best["seeds"])} seed{"s" if len(best["seeds"]) > 1 else ""}: '
        + ', '.join(f'{100 * a:.1f}%' for a in best['seeds']) + ').')
  for other in summary['confirmed']:
    if other['learning_rate'] != summary['best_learning_rate']:
      lines.append(
          f'Also trained with {len(other["seeds"])} seeds, as the seeds '
          'could not separate it from the best: '
          f'{_rate(other["learning_rate"])}, {100 * other["mean"]:.1f}% ± '
          f'{100 * other["std"]:.1f}% (' + ', '.join(
              f'{100 * a:.1f}%' for a in other['seeds']) + ').')
  lines += [
      '',
      f'**Edge**: every run converged at {_rate(summary["largest_converged_rate"])}; '
      f'the smallest rate above the best at which a run failed (diverged or '
      f'collapsed to chance) is {_rate(summary["smallest_failed_rate"])}.',
      '',
      ('No range test: the rates were given.' if summary['range_test_rate']
       is None else
       f'Predictions: the range test recommended '
       f'{_rate(summary["range_test_rate"])} '
       f'({summary["range_test_reason"]}); the curvature bound at '
       f'initialisation is {_rate(summary["curvature_bound"])}.'),
      '',
      f'Compute: {summary["steps_trained"]:,} training steps, '
      f'{100 * summary["steps_trained"] / full:.0f}% of the full grid\'s '
      f'{full:,} ({len(summary["learning_rates"])} rates x '
      f'{summary["num_epochs"]} epochs): the search '
      f'{100 * summary["steps_search"] / full:.0f}%, the confirmation '
      f'{100 * summary["steps_confirm"] / full:.0f}%, the range test '
      f'{summary["steps_range_test"]:,} steps. Time training: '
      f'{_hours(summary["wall_time_s"])}, against about '
      f'{_hours(summary["full_grid_wall_time_s_estimate"])} for the full grid '
      'at the same speed.',
      '',
      '| rate | seed | epochs | best val. accuracy | outcome |',
      '| ---: | ---: | ---: | ---: | --- |',
  ]
  for run in summary['runs']:
    acc = run['best_val_accuracy']
    lines.append(f'| {_rate(run["learning_rate"])} | {run["seed"]} | '
                 f'{run["epochs"]} | '
                 f'{"n/a" if acc is None else f"{100 * acc:.1f}%"} | '
                 f'{run["outcome"]} |')
  lines += ['', 'Rungs (successive halving, ranked by best validation '
            'accuracy so far):']
  for rung in summary['rungs']:
    failed = f'; failed: {", ".join(rung["failed"])}' if rung['failed'] else ''
    promoted = (f'; on to the next: {", ".join(rung["promoted"])}'
                if rung['promoted'] else '')
    entered = len(rung['ranked']) + len(rung['failed'])
    lines.append(f'- epoch {rung["epoch"]}: {entered} '
                 f'run{"s" if entered > 1 else ""}{failed}{promoted}')
  lines += ['', f'![accuracy against rate]({PLOT_FILE})', '']
  return '\n'.join(lines)


def _failed(run: dict[str, Any]) -> bool:
  return ('diverged' in run['outcome'] or 'at chance' in run['outcome']
          or run['status'] == 'not_converged')


def plot(summary: dict[str, Any], path: str) -> None:
  """Best validation accuracy against rate, each run marked (and labelled)
  by the epochs it trained; failed runs as crosses at 0."""
  # pylint: disable-next=g-import-not-at-top
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(10, 4.5))
  search = [r for r in summary['runs'] if r['seed'] == 0]
  trained = [r for r in search if not _failed(r)
             and r['best_val_accuracy'] is not None]
  markers = 'sD^vo'
  for i, count in enumerate(sorted({r['epochs'] for r in trained})):
    runs = [r for r in trained if r['epochs'] == count]
    ax.plot([r['learning_rate'] for r in runs],
            [100 * r['best_val_accuracy'] for r in runs],
            markers[min(i, len(markers) - 1)], markersize=7, linestyle='none',
            label=f'trained {count} of {summary["num_epochs"]} epochs')
  for run in trained:
    ax.annotate(str(run['epochs']), (run['learning_rate'],
                                     100 * run['best_val_accuracy']),
                textcoords='offset points', xytext=(0, 7), ha='center',
                fontsize=7)
  failed = [r for r in search if _failed(r)]
  if failed:
    ax.plot([r['learning_rate'] for r in failed], [0] * len(failed), 'rx',
            markersize=9, label='failed (diverged or at chance)')
  for confirmed in summary['confirmed']:
    won = confirmed['learning_rate'] == summary['best_learning_rate']
    ax.errorbar([confirmed['learning_rate']], [100 * confirmed['mean']],
                yerr=[100 * confirmed['std']], fmt='*' if won else 'o',
                color='k' if won else 'gray', markersize=12 if won else 6,
                capsize=4, label=('best' if won else 'also confirmed') +
                f', mean ± std of {len(confirmed["seeds"])} seeds')
  for x, style, label in ((summary['range_test_rate'], ':', 'range test'),
                          (summary['curvature_bound'], '--',
                           'curvature bound')):
    if x is not None:
      ax.axvline(x, color='gray', linestyle=style, label=label)
  ax.set_xscale('log')
  ax.set_xlabel('learning rate')
  ax.set_ylabel('best validation accuracy (%)')
  ax.set_ylim(-5, 105)
  ax.grid(True, which='major', alpha=0.3)
  ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
  fig.tight_layout()
  with files.atomic_path(path) as tmp:
    fig.savefig(tmp, format='png', dpi=100)
  plt.close(fig)


def write(workdir: str, summary: dict[str, Any]) -> str:
  """Writes the three files; returns study.md's text."""
  text = markdown(summary)
  files.atomic_write_text(os.path.join(workdir, JSON_FILE),
                          json.dumps(summary, indent=1))
  plot(summary, os.path.join(workdir, PLOT_FILE))
  files.atomic_write_text(os.path.join(workdir, MARKDOWN_FILE), text)
  return text
