"""Tests of lettercnn.report on fake run directories.

Runs are faked the way lettercnn.main writes them: scalars through clu's
default writer (TensorBoard tensor summaries) plus a status.json.
"""

import csv
import json
import math
import pathlib
import shutil
import subprocess
import sys

from clu import metric_writers
import numpy as np
from PIL import Image
import pytest

from lettercnn import confusion
from lettercnn.sweep import report
from lettercnn.sweep import runs as report_runs
from lettercnn.sweep import plots as sweep_plots

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 4
NUM_CLASSES = 10
PLOTS = ('train_loss.png', 'train_accuracy.png', 'curves.png',
         'accuracy_vs_lr.png', 'lr_batch_heatmap.png')


def write_events(run_dir: pathlib.Path, epochs: int, train_losses, train_accs,
                 val_accs, learning_rate: float, start_epoch: int = 0) -> None:
  """Writes two interval scalars per epoch and the epoch-end scalars."""
  writer = metric_writers.create_default_writer(str(run_dir))
  half = STEPS_PER_EPOCH // 2
  for epoch in range(start_epoch, epochs):
    loss, acc, val = train_losses[epoch], train_accs[epoch], val_accs[epoch]
    end = (epoch + 1) * STEPS_PER_EPOCH
    writer.write_scalars(end - half, {
        'train_loss': loss * 1.1, 'train_accuracy': acc * 0.9,
        'learning_rate': learning_rate})
    writer.write_scalars(end, {
        'train_loss': loss, 'train_accuracy': acc,
        'learning_rate': learning_rate, 'epoch_train_loss': loss,
        'epoch_train_accuracy': acc, 'val_loss': loss * 1.2,
        'val_accuracy': val})
  writer.flush()
  writer.close()


def write_status(run_dir: pathlib.Path, status: str, learning_rate: float,
                 epoch: float, final: dict[str, float | None],
                 best: dict[str, float] | None, num_epochs: int = 3) -> None:
  run_dir.mkdir(parents=True, exist_ok=True)
  (run_dir / 'status.json').write_text(json.dumps({
      'status': status, 'step': int(epoch * STEPS_PER_EPOCH), 'epoch': epoch,
      'num_epochs': num_epochs, 'steps_per_epoch': STEPS_PER_EPOCH,
      'final': final, 'best': best, 'num_classes': NUM_CLASSES,
      'wall_time_s': 1.0, 'config': {'learning_rate': learning_rate},
  }))


def make_finished_run(sweep_dir: pathlib.Path, name: str, learning_rate: float,
                      status: str, val_accs: list[float]) -> None:
  """A 3-epoch run whose status.json agrees with its events."""
  run_dir = sweep_dir / name
  losses, accs = [2.0, 1.0, 0.5], [0.3, 0.6, 0.9]
  write_events(run_dir, 3, losses, accs, val_accs, learning_rate)
  best = max(range(3), key=lambda i: val_accs[i])
  write_status(
      run_dir, status, learning_rate, 3.0,
      {'train_loss': losses[-1], 'train_accuracy': accs[-1],
       'val_loss': losses[-1] * 1.2, 'val_accuracy': val_accs[-1]},
      {'val_accuracy': val_accs[best], 'epoch': best + 1})


def make_diverged_run(sweep_dir: pathlib.Path) -> None:
  """lr 1e-1: finite for an epoch and a half, then the loss is nan."""
  run_dir = sweep_dir / 'lr_1e-1'
  writer = metric_writers.create_default_writer(str(run_dir))
  writer.write_scalars(2, {'train_loss': 2.3, 'train_accuracy': 0.1,
                           'learning_rate': 0.1})
  writer.write_scalars(4, {'train_loss': 40.0, 'train_accuracy': 0.1,
                           'learning_rate': 0.1, 'epoch_train_loss': 20.0,
                           'epoch_train_accuracy': 0.1, 'val_loss': 50.0,
                           'val_accuracy': 0.1})
  writer.write_scalars(6, {'train_loss': float('nan'),
                           'train_accuracy': 0.1, 'learning_rate': 0.1})
  writer.flush()
  writer.close()
  # A high best accuracy that must not make a diverged rate the best one.
  write_status(run_dir, 'diverged', 0.1, 1.5,
               {'train_loss': float('nan'), 'train_accuracy': 0.1,
                'val_loss': None, 'val_accuracy': 0.1},
               {'val_accuracy': 0.99, 'epoch': 1})


@pytest.fixture(scope='module')
def sweep(tmp_path_factory) -> pathlib.Path:
  """Four rates: diverged, not converged, best (1e-4), worse (1e-5)."""
  sweep_dir = tmp_path_factory.mktemp('sweep')
  make_diverged_run(sweep_dir)
  make_finished_run(sweep_dir, 'lr_1e-2', 1e-2, 'not_converged',
                    [0.1, 0.12, 0.11])
  make_finished_run(sweep_dir, 'lr_1e-4', 1e-4, 'converged',
                    [0.5, 0.94, 0.93])
  make_finished_run(sweep_dir, 'lr_1e-5', 1e-5, 'converged', [0.4, 0.6, 0.8])
  (sweep_dir / 'notes.txt').write_text('not a run')
  (sweep_dir / 'empty_subdir').mkdir()
  return sweep_dir


def run_main(sweep_dir: pathlib.Path, capsys) -> tuple[int, str, str]:
  code = report.main([str(sweep_dir)])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def read_csv(sweep_dir: pathlib.Path) -> list[dict[str, str]]:
  with (sweep_dir / 'summary.csv').open(newline='') as f:
    return list(csv.DictReader(f))


def assert_plots_are_images(sweep_dir: pathlib.Path) -> None:
  for name in PLOTS:
    path = sweep_dir / name
    assert path.stat().st_size > 0, name
    with Image.open(path) as image:
      image.verify()
    with Image.open(path) as image:
      assert image.format == 'PNG'
      assert image.size[0] > 100 and image.size[1] > 100


def test_full_sweep_table_best_rate_and_plots(sweep, capsys):
  code, out, err = run_main(sweep, capsys)
  assert code == 0, err

  rows = read_csv(sweep)
  assert [r['run'] for r in rows] == ['lr_1e-1', 'lr_1e-2', 'lr_1e-4',
                                     'lr_1e-5']
  assert tuple(rows[0]) == report.CSV_COLUMNS
  assert [float(r['learning_rate']) for r in rows] == [0.1, 1e-2, 1e-4, 1e-5]
  assert [r['status'] for r in rows] == ['diverged', 'not_converged',
                                        'converged', 'converged']
  best = rows[2]
  assert float(best['final_train_loss']) == pytest.approx(0.5)
  assert float(best['final_train_accuracy']) == pytest.approx(0.9)
  assert float(best['final_val_accuracy']) == pytest.approx(0.93)
  assert float(best['best_val_accuracy']) == pytest.approx(0.94)
  assert float(best['best_val_epoch']) == 2
  assert float(best['epochs_run']) == 3
  assert int(best['num_epochs']) == 3
  diverged = rows[0]
  assert math.isnan(float(diverged['final_train_loss']))
  assert float(diverged['epochs_run']) == 1.5
  # Null in status.json: the last logged value fills in.
  assert float(diverged['final_val_loss']) == 50.0

  summary = (sweep / 'summary.md').read_text()
  for text in (out, summary):
    assert ('Best point: lr_1e-4 (mean best validation accuracy 94.0%, 1 run)'
            in text)
    assert 'ties go to' in text
    assert '| lr_1e-1 | 1e-1 | diverged |' in text
  assert 'Chance level: 10.0%' in summary
  assert 'Not finished' not in summary
  assert '![Training curves](curves.png)' in summary
  assert_plots_are_images(sweep)


def test_diverged_curve_keeps_nan_and_ends_where_it_diverged(sweep):
  run = report_runs.load_run(sweep / 'lr_1e-1')
  assert run is not None and run.diverged
  assert list(run.train_loss.epochs) == [0.5, 1.0, 1.5]
  assert math.isnan(run.train_loss.values[-1])
  assert run.learning_rate == 0.1


def test_partial_sweep_without_status_or_final_values(tmp_path, capsys):
  # Running: status.json with null finals; values come from the events.
  write_events(tmp_path / 'lr_1e-3', 2, [1.5, 0.7], [0.5, 0.8], [0.6, 0.7],
               1e-3)
  write_status(tmp_path / 'lr_1e-3', 'running', 1e-3, 2.0,
               {'train_loss': None, 'train_accuracy': None,
                'val_loss': None, 'val_accuracy': None}, None, num_epochs=30)
  # Just started: events only, the rate is the logged one.
  write_events(tmp_path / 'lr_1e-6', 1, [2.2], [0.15], [0.2], 1e-6)
  # Not started: neither file, so not a run.
  (tmp_path / 'lr_1e-7').mkdir()

  code, out, err = run_main(tmp_path, capsys)
  assert code == 0, err

  rows = read_csv(tmp_path)
  assert [r['run'] for r in rows] == ['lr_1e-3', 'lr_1e-6']
  running, started = rows
  assert running['status'] == 'running'
  assert float(running['final_train_loss']) == pytest.approx(0.7)
  assert float(running['final_train_accuracy']) == pytest.approx(0.8)
  assert float(running['best_val_accuracy']) == pytest.approx(0.7)
  assert float(running['best_val_epoch']) == 2
  assert started['status'] == report_runs.UNKNOWN_STATUS
  assert float(started['learning_rate']) == pytest.approx(1e-6)
  assert float(started['epochs_run']) == 1
  assert started['num_epochs'] == ''
  assert '2 / 30' in out
  assert 'Best point: lr_1e-3 (' in out
  assert 'Not finished yet (lr_1e-3, lr_1e-6)' in (
      tmp_path / 'summary.md').read_text()
  assert_plots_are_images(tmp_path)


def test_resumed_run_later_value_wins(tmp_path):
  run_dir = tmp_path / 'lr_1e-4'
  write_events(run_dir, 2, [1.0, 0.9], [0.5, 0.6], [0.5, 0.6], 1e-4)
  # Resumed from the end of epoch 1: epoch 2 is logged again, better.
  write_events(run_dir, 3, [1.0, 0.4, 0.3], [0.5, 0.8, 0.85],
               [0.5, 0.8, 0.82], 1e-4, start_epoch=1)
  run = report_runs.load_run(run_dir)
  assert run.best_val_accuracy == pytest.approx(0.82)
  assert run.best_val_epoch == 3
  assert list(run.train_loss.epochs) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
  assert run.train_loss.values[3] == pytest.approx(0.4)


@pytest.mark.parametrize('lr, text', [(1e-4, '1e-4'), (0.1, '1e-1'),
                                      (2.5e-3, '2.5e-3'), (None, '?')])
def test_format_lr(lr, text):
  assert sweep_plots.format_lr(lr) == text


def test_not_a_sweep_gives_one_line_error(tmp_path, capsys):
  (tmp_path / 'empty').mkdir()
  foreign = tmp_path / 'foreign'
  (foreign / 'photos').mkdir(parents=True)
  (foreign / 'photos' / 'a.jpg').write_bytes(b'\xff\xd8')
  (foreign / 'readme.txt').write_text('hello')
  single = tmp_path / 'single_run'
  write_status(single, 'converged', 1e-4, 3.0, {}, None)

  for path, message in ((tmp_path / 'empty', 'No training runs in'),
                        (foreign, 'No training runs in'),
                        (tmp_path / 'missing', 'is not a directory'),
                        (single, 'single run')):
    code, out, err = run_main(path, capsys)
    assert code == 2, path
    assert out == ''
    assert message in err
    assert err.count('\n') == 1, err
  assert not list((tmp_path / 'empty').iterdir())


def test_cli_empty_dir_exits_non_zero_without_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'lettercnn.report', str(tmp_path)],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().startswith('report: No training runs in')
  assert result.stdout == ''


def _add_confusion(run_dir: pathlib.Path, matrix: list[list[int]]) -> None:
  """A 'val_confusion' of three classes in the run's status.json."""
  status = json.loads((run_dir / 'status.json').read_text())
  status['val_confusion'] = confusion.record(np.array(matrix), ['C', 'O', 'R'],
                                             step=12)
  (run_dir / 'status.json').write_text(json.dumps(status))


def test_best_run_confusion_matrix_and_most_confused_pairs(tmp_path, capsys):
  make_finished_run(tmp_path, 'lr_1e-3', 1e-3, 'converged', [0.5, 0.6, 0.7])
  make_finished_run(tmp_path, 'lr_1e-4', 1e-4, 'converged', [0.5, 0.8, 0.9])
  _add_confusion(tmp_path / 'lr_1e-3', [[9, 1, 0], [0, 10, 0], [0, 0, 10]])
  _add_confusion(tmp_path / 'lr_1e-4', [[7, 3, 0], [1, 9, 0], [0, 2, 8]])

  code, out, err = run_main(tmp_path, capsys)

  assert code == 0, err
  summary = (tmp_path / 'summary.md').read_text()
  assert "## The best run's confusions" in summary
  assert ('lr_1e-4, its final parameters (step 12) on the validation split, '
          'accuracy 80.0%.') in summary
  assert '| C | O | 3 | 30.0% |\n| R | O | 2 | 20.0% |\n| O | C | 1 | 10.0% |' \
      in summary
  assert 'Per-class accuracy: C 70.0%, O 90.0%, R 80.0%.' in summary
  assert '![Confusion matrix of lr_1e-4](best_run_confusion.png)' in summary
  assert ('Most confused: C as O: 3 (30.0% of C); R as O: 2 (20.0% of R); '
          'O as C: 1 (10.0% of O).') in out
  with Image.open(tmp_path / 'best_run_confusion.png') as image:
    assert image.format == 'PNG' and image.size[0] > 300


def test_no_confusion_section_without_a_recorded_matrix(sweep, capsys):
  code, out, _ = run_main(sweep, capsys)
  assert code == 0
  assert 'confusions' not in (sweep / 'summary.md').read_text()
  assert 'Most confused' not in out
  assert not (sweep / 'best_run_confusion.png').exists()


def test_range_test_and_curvature_bound_beside_the_sweep(sweep, tmp_path,
                                                         capsys):
  sweep_dir = tmp_path / 'sweep'
  shutil.copytree(sweep, sweep_dir)
  lr_find_dir = sweep_dir / 'lr_find'
  lr_find_dir.mkdir()
  # Scalars as lr_find writes them: the folder must not count as a run.
  writer = metric_writers.create_default_writer(str(lr_find_dir))
  writer.write_scalars(0, {'lr_find/loss': 2.3})
  writer.close()
  suggestions = {'valley': 1.2e-3, 'steepest': 3.4e-3, 'minimum_div_10': 1.4e-4}
  (lr_find_dir / 'lr_find.json').write_text(json.dumps({
      'seeds': [{'seed': 0}, {'seed': 1}], 'suggestions': suggestions,
      'spread': {'valley': 1.3, 'steepest': 1.2, 'minimum_div_10': 2.3},
      'recommended': 1.4e-4,
      'bound_over_seeds': {'median': 7.2e-3, 'spread': 5.1},
      'sharpness': {'lambda_max': 1112.0, 'bound': 3.4e-3, 'examples': 1000,
                    'formula': '2(1+mu)/lambda, mu=0.9',
                    'batch_bound': 7.3e-3}}))
  status_path = sweep_dir / 'lr_1e-4' / 'status.json'
  status = json.loads(status_path.read_text())
  status['initial_sharpness'] = {'lambda_max': 1000.0, 'bound': 3.8e-3,
                                 'formula': '2(1+mu)/lambda, mu=0.9'}
  status_path.write_text(json.dumps(status))
  writer = metric_writers.create_default_writer(str(sweep_dir / 'lr_1e-4'))
  for step, value in ((0, 1000.0), (4, 2000.0), (8, 3500.0)):
    writer.write_scalars(step, {'sharpness': value, 'sharpness_limit': 38000})
  writer.close()

  code, out, err = run_main(sweep_dir, capsys)
  assert code == 0, err
  assert [r['run'] for r in read_csv(sweep_dir)] == [
      'lr_1e-1', 'lr_1e-2', 'lr_1e-4', 'lr_1e-5']
  summary = (sweep_dir / 'summary.md').read_text()
  for text in (out, summary):
    assert ('Range test `lr_find`: recommended 0.00014; valley 0.0012, '
            'steepest 0.0034, minimum_div_10 0.00014 (max/min over 2 seeds: '
            '1.3x, 1.2x, 2.3x). Curvature bound at initialisation 0.0034 '
            '(lambda_max 1112 over 1000 images, 2(1+mu)/lambda, mu=0.9), '
            "per-example 0.0073; over the 2 seeds' initialisations median "
            '0.0072 (5.1x).') in text
    assert ('Run `lr_1e-4`: sharpness at initialisation 1000, bound 0.0038'
            in text)
    assert ('The sweep: best rate 0.0001, largest rate every seed converged '
            'at 0.0001, smallest a seed diverged at 0.1.') in text
  assert '## Range test and curvature bound' in summary
  assert '![Sharpness during training](sharpness.png)' in summary
  with Image.open(sweep_dir / 'sharpness.png') as image:
    assert image.format == 'PNG' and image.size[1] > 200
  run = report_runs.load_run(sweep_dir / 'lr_1e-4')
  assert list(run.sharpness.epochs) == [0, 1, 2]  # 4 steps an epoch.
  assert list(run.sharpness.values) == [1000.0, 2000.0, 3500.0]


def test_no_range_test_section_without_one(sweep, capsys):
  run_main(sweep, capsys)
  assert 'Range test' not in (sweep / 'summary.md').read_text()
  assert not (sweep / 'sharpness.png').exists()


def _seeded_run(sweep_dir: pathlib.Path, learning_rate: float, seed: int,
                val_accs: list[float]) -> pathlib.Path:
  """A finished run of a grid point, `lr_...,seed=N`, batch size 1."""
  name = f'lr_{learning_rate:.0e}'.replace('e-0', 'e-') + f',seed={seed}'
  make_finished_run(sweep_dir, name, learning_rate, 'converged', val_accs)
  path = sweep_dir / name / 'status.json'
  status = json.loads(path.read_text())
  status['config'].update(batch_size=1, seed=seed)
  path.write_text(json.dumps(status))
  return sweep_dir / name


def test_an_unreadable_run_is_counted_apart_and_in_nothing_else(
    tmp_path, capsys, caplog):
  good = tmp_path / 'good'
  _seeded_run(good, 1e-4, 0, [0.5, 0.9, 0.92])
  _seeded_run(good, 1e-4, 1, [0.5, 0.88, 0.9])
  sweep_dir = tmp_path / 'sweep'
  shutil.copytree(good, sweep_dir)
  # A run with events and the first 10 bytes of its status.json.
  bad = _seeded_run(sweep_dir, 1e-5, 0, [0.4, 0.95, 0.97])
  (bad / 'status.json').write_bytes((bad / 'status.json').read_bytes()[:10])

  code, reference_out, err = run_main(good, capsys)
  assert code == 0, err
  caplog.clear()
  code, out, err = run_main(sweep_dir, capsys)
  assert code == 0, err

  left_out = ('Left out: 1 unreadable run (named in the warning), whose '
              'status.json does not read; it is in no table, plot, CSV or '
              'verdict.')
  assert out.replace('\n' + left_out, '') == reference_out
  assert left_out in out
  assert 'lr_1e-5' not in out + err
  [warning] = [r.getMessage() for r in caplog.records if 'lr_1e-5' in
               r.getMessage()]
  assert warning.startswith('Leaving run lr_1e-5,seed=0 out of the report: ')
  assert '\n' not in warning
  for name in ('summary.csv', 'points.csv', 'accuracy_vs_lr.png',
               'lr_batch_heatmap.png', 'curves.png'):
    assert (sweep_dir / name).read_bytes() == (good / name).read_bytes(), name
  summary = (sweep_dir / 'summary.md').read_text()
  assert summary.replace(
      '\n\nLeft out: 1 unreadable run (lr_1e-5,seed=0), whose status.json '
      'does not read; it is in no table, plot, CSV or verdict.', ''
  ) == (good / 'summary.md').read_text()


def test_a_sweep_of_unreadable_runs_only_is_one_line(tmp_path, capsys):
  write_status(tmp_path / 'lr_1e-4', 'converged', 1e-4, 3.0, {}, None)
  (tmp_path / 'lr_1e-4' / 'status.json').write_text('{"status": "conv')
  code, out, err = run_main(tmp_path, capsys)
  assert code == 2 and out == ''
  assert err == (f'report: No readable training runs in {tmp_path}: the '
                 'status.json of lr_1e-4 does not read.\n')
