"""Tests of grouping runs into points over seeds, and of the aggregate report."""

import csv
import json
import pathlib

from PIL import Image
import pytest

from lettercnn.sweep import report
from lettercnn.sweep import runs as report_runs
from lettercnn.sweep import points as sweep_points
from lettercnn.sweep import tables as sweep_tables


def _run(lr: float, batch: int, seed: int, status: str, best_val: float | None,
         final_train: float, **config) -> report_runs.RunSummary:
  return report_runs.RunSummary(
      name=f'lr_{lr:g},batch_size={batch},seed={seed}', learning_rate=lr,
      status=status, final_train_loss=None, final_train_accuracy=final_train,
      final_val_loss=None, final_val_accuracy=None,
      best_val_accuracy=best_val, best_val_epoch=None, epochs_run=None,
      num_epochs=None, num_classes=10, train_loss=None, train_accuracy=None,
      config={'learning_rate': lr, 'batch_size': batch, 'seed': seed,
              'num_epochs': 30, **config})


# Batch 1: 1e-4 wins on its mean; 1e-3 has the best single run (a lucky seed)
# but a worse mean; 1e-2 diverges with one seed of three.
RUNS = [
    _run(1e-2, 1, 0, 'diverged', 0.10, 0.10),
    _run(1e-2, 1, 1, 'converged', 0.95, 0.97),
    _run(1e-2, 1, 2, 'converged', 0.93, 0.96),
    _run(1e-3, 1, 0, 'converged', 0.97, 0.99),
    _run(1e-3, 1, 1, 'converged', 0.70, 0.80),
    _run(1e-3, 1, 2, 'converged', 0.73, 0.83),
    _run(1e-4, 1, 0, 'converged', 0.90, 0.95),
    _run(1e-4, 1, 1, 'converged', 0.92, 0.96),
    _run(1e-4, 1, 2, 'converged', 0.88, 0.94),
    _run(1e-2, 8, 0, 'converged', 0.60, 0.70),
    _run(1e-2, 8, 1, 'converged', 0.62, 0.72),
    _run(1e-3, 8, 0, 'not_converged', 0.12, 0.11),
    _run(1e-3, 8, 1, 'not_converged', 0.11, 0.12),
]


def test_runs_that_differ_only_by_seed_form_one_point():
  points = sweep_points.group_points(RUNS)

  assert [(p.name, len(p.runs)) for p in points] == [
      ('lr_0.01,batch_size=1', 3), ('lr_0.001,batch_size=1', 3),
      ('lr_0.0001,batch_size=1', 3), ('lr_0.01,batch_size=8', 2),
      ('lr_0.001,batch_size=8', 2)]
  assert [p.seeds for p in points[:1]] == [[0, 1, 2]]
  assert [p.num_diverged for p in points] == [1, 0, 0, 0, 0]
  stats = points[2].best_val_accuracy
  assert (stats.mean, stats.low, stats.high, stats.count) == pytest.approx(
      (0.90, 0.88, 0.92, 3))
  assert stats.std == pytest.approx(0.02)  # Sample std (n - 1).
  # A diverged run's values count in the accuracies.
  assert points[0].final_train_accuracy.low == pytest.approx(0.10)


def test_best_point_is_chosen_on_the_mean_and_never_from_a_diverged_one():
  points = sweep_points.group_points(RUNS)

  ranked = sweep_points.ranked_points(points)

  # 1e-2 at batch 1 has the highest mean of the healthy seeds but a diverged
  # run; 1e-3's best single run (0.97) does not carry its mean (0.80).
  assert [p.name for p in ranked][:2] == ['lr_0.0001,batch_size=1',
                                          'lr_0.001,batch_size=1']
  lines = sweep_tables.verdict_lines(points)
  assert lines[0].startswith(
      'Best point: lr_0.0001,batch_size=1 (mean best validation accuracy '
      '90.0% ± 2.0, range 88.0–92.0%, 3 runs)')
  assert lines[1] == (
      'Runner-up: lr_0.001,batch_size=1 (mean best validation accuracy 80.0% '
      '± 14.8, range 70.0–97.0%, 3 runs), below the winner\'s range '
      '(88.0–92.0%).')


def test_runner_up_within_the_winners_range_is_called_inseparable():
  runs = [_run(1e-4, 1, s, 'converged', v, 0.9)
          for s, v in enumerate((0.88, 0.90, 0.92))]
  runs += [_run(1e-5, 1, s, 'converged', v, 0.9)
           for s, v in enumerate((0.89, 0.89, 0.89))]

  lines = sweep_tables.verdict_lines(sweep_points.group_points(runs))

  assert lines[1].endswith("within the winner's range (88.0–92.0%): the "
                           'seeds do not separate them.')


def test_each_seeds_own_pick_shows_when_the_seeds_disagree():
  points = sweep_points.group_points(RUNS)

  picks = sweep_points.best_by_seed(points)

  assert {seed: p.name for seed, p in picks.items()} == {
      0: 'lr_0.001,batch_size=1', 1: 'lr_0.01,batch_size=1',
      2: 'lr_0.01,batch_size=1'}
  assert sweep_tables.verdict_lines(points)[2].endswith('(the seeds disagree).')


def test_per_batch_size_best_and_edges_of_the_workable_rates():
  verdicts = sweep_points.by_batch_size(sweep_points.group_points(RUNS))

  assert [(v.batch_size, v.best.learning_rate, v.largest_converged,
           v.smallest_diverged) for v in verdicts] == [
               (1, 1e-4, 1e-3, 1e-2), (8, 1e-2, 1e-2, None)]


def test_other_swept_fields_are_settings_of_their_points():
  runs = [_run(1e-4, 1, 0, 'converged', 0.9, 0.9, optimizer=o)
          for o in ('sgd', 'adam')]

  points = sweep_points.group_points(runs)

  assert [p.settings for p in points] == [(('optimizer', 'adam'),),
                                          (('optimizer', 'sgd'),)]


def _write_status(run_dir: pathlib.Path, run: report_runs.RunSummary) -> None:
  run_dir.mkdir(parents=True)
  (run_dir / 'status.json').write_text(json.dumps({
      'status': run.status, 'epoch': 30.0, 'num_epochs': 30,
      'num_classes': 10, 'config': run.config,
      'final': {'train_accuracy': run.final_train_accuracy},
      'best': {'val_accuracy': run.best_val_accuracy, 'epoch': 3}}))


def test_report_writes_points_csv_heatmap_and_error_bars(tmp_path, capsys):
  for run in RUNS:
    _write_status(tmp_path / run.name, run)

  assert report.main([str(tmp_path)]) == 0

  out = capsys.readouterr().out
  assert '| lr_0.0001,batch_size=1 | 1e-4 | 1 | 3 | 0 | 95.0 ± 1.0% ' in out
  assert '| 8 | 1e-2 (61.0%) | 1e-2 | - |' in out
  with (tmp_path / 'points.csv').open(newline='') as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == sweep_tables.POINTS_CSV_COLUMNS
  assert [(r['point'], r['runs'], r['diverged'], r['seeds']) for r in rows][0] == (
      'lr_0.01,batch_size=1', '3', '1', '0 1 2')
  assert float(rows[2]['best_val_accuracy_mean']) == pytest.approx(0.90)
  assert float(rows[2]['best_val_accuracy_std']) == pytest.approx(0.02)
  summary = (tmp_path / 'summary.md').read_text()
  assert '## Points' in summary and '## By batch size' in summary
  for name in ('accuracy_vs_lr.png', 'lr_batch_heatmap.png'):
    with Image.open(tmp_path / name) as image:
      image.verify()
