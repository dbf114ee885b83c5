"""Bad input: one clear error line, non-zero exit, nothing built or deleted."""

import os
import subprocess
import sys

from conftest import REPO_ROOT
import pytest
from run_helpers import run_selected_cases


def _main(*args, workdir):
  return subprocess.run(
      [sys.executable, '-m', 'lettercnn.main', f'--workdir={workdir}', *args],
      cwd=REPO_ROOT, capture_output=True, text=True, check=False)


def _error_lines(result):
  return [l for l in result.stderr.splitlines() if 'error' in l.lower()]


@pytest.fixture(scope='module')
def bad_config_runs(request, tmp_path_factory):
  """Each selected case's `lettercnn.main` in a folder of its own, two at a time.

  Maps the override to (its folder, its completed process).
  """
  def run(override):
    folder = tmp_path_factory.mktemp('bad_config')
    return folder, _main('--config=configs/lr_1e-4.py', *override.split(),
                         f'--config.data_dir={folder / "data"}',
                         workdir=folder / 'run')

  return run_selected_cases(request,
                            'test_bad_config_is_one_line_before_any_work',
                            'override', run)


@pytest.mark.parametrize('override, message', [
    ('--config.learning_rate=0', 'learning_rate=0.0 must be a positive finite'),
    ('--config.learning_rate=-0.1', 'learning_rate=-0.1 must be a positive'),
    ('--config.learning_rate=nan', 'learning_rate=nan must be a positive'),
    ('--config.learning_rate=inf', 'learning_rate=inf must be a positive'),
    ('--config.batch_size=0', 'batch_size=0 must be an integer >= 1'),
    ('--config.batch_size=3', 'batch_size=3 does not divide over 2 devices'),
    ('--config.num_epochs=0', 'num_epochs=0 must be an integer >= 1'),
    ('--config.lr_decay_factor=0',
     "lr_decay_factor=0.0 must be in (0, 1] for lr_policy='step'"),
    ('--config.lr_decay_factor=1.5', 'lr_decay_factor=1.5 must be in (0, 1]'),
    ('--config.lr_step_percent=0',
     "lr_step_percent=0.0 must be in (0, 100] for lr_policy='step'"),
    ('--config.lr_policy=cosine',
     "lr_policy='cosine' is not one of fixed, step, multistep, exp, inv, "
     'poly, sigmoid'),
    ('--config.lr_policy=poly --config.lr_power=-1',
     "lr_power=-1.0 must be a positive finite number for lr_policy='poly'"),
    ('--config.lr_policy=multistep --config.lr_multistep_percents=(50,120)',
     'lr_multistep_percents=(50, 120) must be numbers in (0, 100)'),
    ('--config.optimizer=lbfgs',
     "optimizer='lbfgs' is not one of sgd, momentum, nesterov, adagrad, "
     'rmsprop, adadelta, adam'),
    ('--config.momentum_form=pytorch',
     "momentum_form='pytorch' is not one of caffe, tensorflow"),
    ('--config.model=vgg', "model='vgg' is not one of"),
    ('--config.mean_subtraction=median',
     "mean_subtraction='median' is not one of none, image, pixel"),
    ('--config.bias_lr_mult=0', 'bias_lr_mult=0.0 must be a positive finite'),
    ('--config.num_devices=3', 'num_devices=3 but 2 local device(s)'),
    ('--config.cpu_devices=0', 'cpu_devices=0 must be an integer >= 1'),
    ('--config.colour=1', "unknown config field 'colour'"),
    ('--config.learning_rate=1e308', 'learning_rate=1e+308 overflows float32'),
    ('--config.weight_decay_per_lr=nan',
     'weight_decay_per_lr=nan must be a finite number >= 0'),
    ('--config.weight_decay_per_lr=-0.01',
     'weight_decay_per_lr=-0.01 must be a finite number >= 0'),
    ('--config.not_converged_margin_points=nan',
     'not_converged_margin_points=nan must be a number of percentage points'),
    ('--config.divergence_loss_factor=inf',
     'divergence_loss_factor=inf must be a finite number > 1'),
    ('--config.seed=-1', 'seed=-1 must be an integer in [0, 2**32)'),
    ('--config.dataset_seed=4294967296',
     'dataset_seed=4294967296 must be an integer in [0, 2**32)'),
    ('--config.image_size=15', "image_size=15 is below lenet's smallest input"),
    ('--config.examples_per_class=2',
     'examples_per_class=2 with validation_fraction=0.25 gives 2 training and'
     ' 0 validation'),
    ('--config.examples_per_class=1',
     'examples_per_class=1 with validation_fraction=0.25 gives 1 training and'
     ' 0 validation'),
    ('--config.image_size=100000 --config.num_devices=1',
     'this config needs at least'),
    ('--config.examples_per_class=1000000000 --config.num_devices=1',
     'this config needs at least 2920'),  # 7e9 images of 28x28 floats.
    ('--config.num_epochs=100000000 --config.num_devices=1',
     'num_epochs=100000000 x 5250 steps per epoch (batch_size=1) is '
     '525000000000 training steps, more than the step counter (int32) holds'),
])
def test_bad_config_is_one_line_before_any_work(override, message,
                                                bad_config_runs):
  folder, result = bad_config_runs[override]
  data_dir = folder / 'data'
  assert result.returncode != 0
  [line] = _error_lines(result)
  assert line.startswith(f'lettercnn: error: {message}')
  assert not data_dir.exists()  # No dataset was built.
  assert not (folder / 'run').exists()


def test_missing_config_file(tmp_path):
  result = _main('--config=configs/lr_5e-4.py', workdir=tmp_path)
  assert result.returncode != 0
  assert _error_lines(result) == [
      "lettercnn: error: config file 'configs/lr_5e-4.py' does not exist"]


def test_config_file_without_get_config(tmp_path):
  path = tmp_path / 'broken.py'
  path.write_text('learning_rate = 1e-4\n')
  result = _main(f'--config={path}', workdir=tmp_path / 'run')
  assert result.returncode != 0
  assert _error_lines(result) == [
      f"lettercnn: error: config file '{path}' does not define get_config()"]


def test_workdir_of_another_config_is_refused_and_kept(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'status.json').write_text(
      '{"status": "running", "config": {"learning_rate": 0.001}}')
  (workdir / 'notes.txt').write_text('mine')
  result = _main('--config=configs/lr_1e-4.py', '--config.num_devices=1',
                 workdir=workdir)
  assert result.returncode != 0
  [line] = _error_lines(result)
  assert line.startswith(f'lettercnn: error: workdir {workdir} holds a run of '
                         'a different config (')
  assert 'learning_rate: 0.001 there vs 0.0001 now' in line
  assert 'delete that folder to start afresh' in line
  assert sorted(os.listdir(workdir)) == ['notes.txt', 'status.json']


# Config files that fail as they load, and the one line each gets.
_BROKEN_CONFIG_FILES = {
    'syntax': ('def get_config(:\n  pass\n',
               ' has a syntax error at line 1: invalid syntax'),
    'missing_module': ('import no_such_module_xyz\n'
                       'def get_config():\n  pass\n',
                       ", line 1: imports module 'no_such_module_xyz', which "
                       'cannot be found'),
    'raises': ('def get_config():\n  raise RuntimeError("no rate chosen")\n',
               ', line 2: get_config() raised RuntimeError: no rate chosen'),
    'wrong_type': ('from configs import default\n'
                   'def get_config():\n'
                   '  config = default.get_config()\n'
                   '  config.learning_rate = "0.1"\n'
                   '  return config\n',
                   ", line 4: get_config() raised TypeError: Could not "
                   "override field 'learning_rate'"),
    'returns_none': ('def get_config():\n  config = 1\n',
                     ': get_config() returned None, not an '
                     'ml_collections.ConfigDict'),
    'no_get_config': ('# def get_config() is below, commented out\n'
                      'def get_confi():\n  pass\n',
                      ' does not define get_config()'),
}


@pytest.mark.parametrize('case', sorted(_BROKEN_CONFIG_FILES))
def test_broken_config_file_is_named_in_one_line(case, tmp_path):
  from lettercnn import config_loading  # pylint: disable=g-import-not-at-top
  from lettercnn import errors  # pylint: disable=g-import-not-at-top
  source, message = _BROKEN_CONFIG_FILES[case]
  path = tmp_path / f'{case}.py'
  path.write_text(source)
  with pytest.raises(errors.InputError) as raised:
    config_loading.load_config(str(path), [])
  assert str(raised.value).startswith(f'config file {str(path)!r}{message}')
  assert '\n' not in str(raised.value)


def test_config_file_syntax_error_is_one_line_not_a_traceback(tmp_path):
  path = tmp_path / 'typo.py'
  path.write_text('def get_config():\n  return 1 +\n')
  result = _main(f'--config={path}', workdir=tmp_path / 'run')
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr
  assert _error_lines(result) == [
      f"lettercnn: error: config file '{path}' has a syntax error at line 2: "
      'invalid syntax']
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('num_epochs, fits', [(409044, True),
                                              (409045, False)])
def test_total_steps_are_checked_against_int32(num_epochs, fits):
  """The generated dataset's 5250 training images: 5250 steps an epoch."""
  from lettercnn import config_checks  # pylint: disable=g-import-not-at-top
  from lettercnn import config_loading  # pylint: disable=g-import-not-at-top
  from lettercnn import errors  # pylint: disable=g-import-not-at-top
  config = config_loading.load_config(
      'configs/lr_1e-4.py', [f'--config.num_epochs={num_epochs}',
                             '--config.num_devices=1'])
  if fits:
    assert config_checks.check_config(config) == 1
  else:
    with pytest.raises(errors.InputError, match=(
        f'^num_epochs={num_epochs} x 5250 steps per epoch')):
      config_checks.check_config(config)


@pytest.mark.parametrize('workdir', ['', ' '])
def test_empty_workdir_is_refused(workdir, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'lettercnn.main',
       f'--config={REPO_ROOT / "configs" / "lr_1e-4.py"}',
       f'--workdir={workdir}'], cwd=tmp_path, env={
           **os.environ, 'PYTHONPATH': str(REPO_ROOT)},
      capture_output=True, text=True, check=False)
  assert result.returncode == 2
  assert _error_lines(result) == [
      f'lettercnn: error: flag --workdir={workdir}: empty; name a folder, or '
      'leave --workdir out to train in runs/<config file stem>']
  assert os.listdir(tmp_path) == []  # No runs/lr_1e-4 made here.
