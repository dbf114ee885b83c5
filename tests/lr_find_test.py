"""`python -m lettercnn.lr_find`: a tiny range test end to end, and bad settings."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from run_helpers import run_selected_cases
from lettercnn import errors
from lettercnn.lr_find import workdir as lr_find_workdir
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

  # A rerun into its own workdir replaces its own event file: the curve is
  # in TensorBoard once, from the new file alone.
  [first_events] = lr_find_workdir.own_event_files(str(workdir))
  rerun = _lr_find(workdir, data_dir)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  [rerun_events] = lr_find_workdir.own_event_files(str(workdir))
  assert rerun_events != first_events
  assert glob.glob(str(workdir / 'events.out.*')) == [rerun_events]
  with open(workdir / 'lr_find.json') as f:
    assert [c['seed'] for c in json.load(f)['seeds']] == [0]
  scalars = tb_events.read_scalars(str(workdir))
  assert ([s for s, _ in scalars['lr_find/loss']]
          == list(range(found['seeds'][0]['steps_run'])))


def _snapshot(folder):
  """{relative path: bytes} of every file under `folder`."""
  return {str(path.relative_to(folder)): path.read_bytes()
          for path in sorted(folder.rglob('*')) if path.is_file()}


def test_a_training_runs_workdir_is_refused_and_kept(tmp_path, data_dir):
  workdir = tmp_path / 'lr_1e-4'
  workdir.mkdir()
  (workdir / 'status.json').write_text(json.dumps(
      {'status': 'converged', 'step': 10, 'config': {'learning_rate': 1e-4}}))
  (workdir / 'events.out.tfevents.1.host.7.v2').write_bytes(b'history')
  before = _snapshot(workdir)

  result = _lr_find(workdir, data_dir)

  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f'lr_find: error: workdir {workdir} holds files lr_find did not write '
      '(status.json, events.out.tfevents.1.host.7.v2), which it neither '
      'deletes nor mixes its curves into; pass a folder of its own, such as '
      f'--workdir={workdir}/lr_find')
  assert _snapshot(workdir) == before
  assert sorted(p.name for p in workdir.iterdir()) == sorted(before)


@pytest.mark.parametrize('names,foreign', [
    (['status.json'], ['status.json']),
    (['checkpoints/1/x', 'best_checkpoint/2/x'],
     ['checkpoints/', 'best_checkpoint/']),
    (['events.out.tfevents.1.host.7.v2'], ['events.out.tfevents.1.host.7.v2']),
    # A sweep's hparams file at a sweep folder's root.
    (['events.out.tfevents.1.host.7.lettercnn_sweep_hparams'],
     ['events.out.tfevents.1.host.7.lettercnn_sweep_hparams']),
    # lr_find's own files: a rerun may replace them.
    (['lr_find.json', 'lr_find.png',
      'events.out.tfevents.1.host.7.v2' + lr_find_workdir.EVENT_SUFFIX], []),
])
def test_files_lr_find_did_not_write_are_foreign(tmp_path, names, foreign):
  for name in names:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b'x')
  assert lr_find_workdir.foreign_files(str(tmp_path)) == foreign
  if foreign:
    with pytest.raises(errors.InputError, match='did not write'):
      lr_find_workdir.check(str(tmp_path))
  else:
    lr_find_workdir.check(str(tmp_path))


def test_events_replace_only_lr_finds_own(tmp_path):
  from lettercnn.lr_find import run as lr_find_run  # pylint: disable=g-import-not-at-top
  foreign = tmp_path / 'events.out.tfevents.1.host.7.v2'
  foreign.write_bytes(b'history')
  earlier = tmp_path / ('events.out.tfevents.1.host.8.v2'
                        + lr_find_workdir.EVENT_SUFFIX)
  earlier.write_bytes(b'an earlier test')
  curve = {'rates': [1e-3, 1e-2, 1e-1], 'losses': [2.3, 2.2, 9.0],
           'smoothed': [2.3, 2.25, 4.5]}

  lr_find_run._write_events(str(tmp_path), {'seeds': [curve]})

  [written] = lr_find_workdir.own_event_files(str(tmp_path))
  assert written != str(earlier) and not earlier.exists()
  assert foreign.read_bytes() == b'history'
  from tensorboard.backend.event_processing import event_file_loader  # pylint: disable=g-import-not-at-top
  steps = [event.step for event in
           event_file_loader.EventFileLoader(written).Load()
           for value in event.summary.value if value.tag == 'lr_find/loss']
  assert steps == [0, 1, 2]


def test_a_test_that_stops_too_early_is_one_line_and_writes_nothing(
    tmp_path, data_dir):
  # Momentum SGD from rate 10 blows up within a few steps, before the first
  # tenth fastai's view of the curve leaves out.
  workdir = tmp_path / 'lr_find'
  result = _lr_find(workdir, data_dir, '--config.lr_find.min_lr=10',
                    '--config.lr_find.max_lr=10000',
                    '--config.lr_find.num_steps=100',
                    '--config.sharpness_examples=2',
                    '--config.sharpness_max_iterations=2')
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert re.fullmatch(
      r'lr_find: error: the test stopped after \d+ of 100 steps, too early '
      r'for a suggestion: lower min_lr',
      result.stderr.strip().splitlines()[-1]), result.stderr[-3000:]
  assert not workdir.exists()  # Nothing a rerun or the report would read.


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
