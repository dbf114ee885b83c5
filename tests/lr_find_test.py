"""`python -m lettercnn.lr_find`: a tiny range test end to end, and bad settings."""

import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from run_helpers import run_selected_cases
from lettercnn.run import events as tb_events

TINY = ['--config.examples_per_class=8', '--config.num_devices=1',
        '--config.batch_size=1', '--config.lr_find.num_steps=150',
        '--config.lr_find.min_lr=1e-5', '--config.lr_find.max_lr=100',
        '--config.sharpness_examples=20', '--config.sharpness_max_iterations=10']


def _lr_find(workdir, data_dir, *overrides):
  return subprocess.run(
      [sys.executable, '-m', 'lettercnn.lr_find', '--config=configs/lr_1e-4.py',
       f'--workdir={workdir}', f'--config.data_dir={data_dir}', *TINY,
       *overrides], cwd=REPO_ROOT, capture_output=True, text=True, check=False)


def test_range_test_writes_curve_suggestions_and_bound(tmp_path, data_dir):
  workdir = tmp_path / 'lr_find'
  result = _lr_find(workdir, data_dir, '--config.lr_find.seeds=2')
  assert result.returncode == 0, result.stderr[-3000:]

  with open(workdir / 'lr_find.json') as f:
    found = json.load(f)
  assert [c['seed'] for c in found['seeds']] == [0, 1]
  for curve in found['seeds']:
    # Momentum SGD at rates up to 100 blows up: the test stops early, at
    # the first point whose smoothed loss passed 4x its minimum.
    steps = curve['steps_run']
    assert 15 < steps < 150
    smooth = curve['smoothed']
    assert len(curve['rates']) == len(curve['losses']) == len(smooth) == steps
    assert smooth[-1] > 4 * min(smooth[:-1]) or smooth[-1] != smooth[-1]
    assert all(s <= 4 * min(smooth[:i + 1]) for i, s in enumerate(smooth[:-1]))
    assert curve['rates'][0] == pytest.approx(1e-5)
    assert set(curve['suggestions']) == {'valley', 'steepest',
                                         'minimum_div_10'}
  sharp = found['sharpness']
  informative = [c['suggestions']['minimum_div_10'] for c in found['seeds']
                 if c['loss_drop'] >= 0.15]
  if len(informative) == 2:
    assert found['recommended'] == pytest.approx(
        (informative[0] * informative[1])**0.5)
  elif informative:
    assert found['recommended'] == pytest.approx(informative[0])
  else:  # The median of the two seeds' bounds, / 10.
    assert found['recommended'] == pytest.approx(
        (found['seeds'][0]['bound'] * found['seeds'][1]['bound'])**0.5 / 10)
  assert sharp['examples'] == 20 and sharp['lambda_max'] > 0
  assert sharp['bound'] == pytest.approx(2 * 1.9 / sharp['lambda_max'])
  # Each seed's bound is measured at its own initialisation.
  first, second = found['seeds']
  assert first['lambda_max'] == sharp['lambda_max']
  assert second['lambda_max'] > 0
  assert second['lambda_max'] != pytest.approx(first['lambda_max'], rel=1e-3)
  assert second['bound'] == pytest.approx(2 * 1.9 / second['lambda_max'])
  assert found['bound_over_seeds']['spread'] == pytest.approx(
      max(first['bound'], second['bound']) /
      min(first['bound'], second['bound']))
  assert sharp['batch_sharpness'] > 0  # Batch size 1.
  assert os.path.getsize(workdir / 'lr_find.png') > 10_000
  scalars = tb_events.read_scalars(str(workdir))
  assert ([s for s, _ in scalars['lr_find/loss']]
          == list(range(found['seeds'][0]['steps_run'])))
  assert [v for _, v in scalars['lr_find/learning_rate']] == pytest.approx(
      found['seeds'][0]['rates'])
  for line in ('valley', 'steepest', 'minimum_div_10', 'recommended: ',
               'stable-rate bound', 'per-example (batch) sharpness',
               "curvature bound over the seeds' initialisations"):
    assert line in result.stdout, result.stdout


@pytest.fixture(scope='module')
def bad_settings_runs(request, tmp_path_factory, data_dir):
  """Each selected case's lr_find in a folder of its own, two at a time.

  Maps the case's overrides (a tuple) to (its folder, its completed process).
  """
  def run(overrides):
    folder = tmp_path_factory.mktemp('bad_settings')
    return folder, _lr_find(folder / 'lr_find', data_dir, *overrides)

  return run_selected_cases(
      request, 'test_bad_settings_are_one_line_before_anything_runs',
      'overrides', run)


@pytest.mark.parametrize('overrides,message', [
    (['--config.lr_find.min_lr=1.0', '--config.lr_find.max_lr=0.1'],
     'lr_find.min_lr=1.0 must be below lr_find.max_lr=0.1'),
    (['--config.lr_find.num_steps=9'],
     'lr_find.num_steps=9 must be an integer >= 10'),
    (['--config.sharpness_examples=61'],
     'sharpness_examples=61 exceeds the 60 training images'),
    (['--config.lr_find.seeds=0'], 'lr_find.seeds=0 must be an integer >= 1'),
])
def test_bad_settings_are_one_line_before_anything_runs(bad_settings_runs,
                                                        overrides, message):
  folder, result = bad_settings_runs[tuple(overrides)]
  workdir = folder / 'lr_find'
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'lr_find: error: {message}')
  assert 'Traceback' not in result.stderr
  assert not workdir.exists()  # Refused before the workdir or the data.
  assert not glob.glob(str(folder / '**' / 'events.out.*'), recursive=True)
