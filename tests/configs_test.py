"""Every configs/lr_*.py and configs/tf/lr_*.py is its default with only the rate set."""

import json

from conftest import load_config
from conftest import REPO_ROOT
import pytest

from configs import default

RATES = {f'lr_1e-{e}': 10.0 ** -e for e in range(1, 8)}


def test_one_config_per_study_rate():
  stems = {p.stem for p in (REPO_ROOT / 'configs').glob('lr_*.py')}
  assert stems == set(RATES)


@pytest.mark.parametrize('stem', sorted(RATES))
def test_config_differs_from_default_only_in_learning_rate(stem):
  config = load_config(stem).to_dict()
  base = default.get_config().to_dict()
  assert config['learning_rate'] == pytest.approx(RATES[stem], rel=1e-12)
  assert {k for k in base if base[k] != config[k]} <= {'learning_rate'}
  assert set(config) == set(base)


def test_tensorflow_default_reads_as_a_diff_of_the_caffe_default():
  tf_config = load_config('tf/default').to_dict()
  base = default.get_config().to_dict()
  assert set(tf_config) == set(base)
  assert {k: tf_config[k] for k in base if base[k] != tf_config[k]} == {
      'model': 'lenet_tf', 'optimizer': 'sgd', 'momentum_form': 'tensorflow',
      'weight_decay_per_lr': 0.0, 'bias_lr_mult': 1.0}


def test_one_tensorflow_config_per_study_rate():
  stems = {p.stem for p in (REPO_ROOT / 'configs' / 'tf').glob('lr_*.py')}
  assert stems == set(RATES)


@pytest.mark.parametrize('stem', sorted(RATES))
def test_tensorflow_config_differs_from_its_default_only_in_learning_rate(
    stem):
  config = load_config(f'tf/{stem}').to_dict()
  base = load_config('tf/default').to_dict()
  assert config['learning_rate'] == pytest.approx(RATES[stem], rel=1e-12)
  assert {k for k in base if base[k] != config[k]} <= {'learning_rate'}


# What a step-policy run records today, and every run folder holds.
_STEP_POLICY_RECORD = {'lr_decay_factor': 0.1,
                       'lr_step_percent': 33.333333333333336,
                       'lr_multistep_percents': [50.0, 75.0], 'lr_power': 1.0}
_POLICY_FIELDS = tuple(_STEP_POLICY_RECORD)


def _policy_fields(*overrides, path='configs/lr_1e-4.py'):
  from lettercnn import config_loading  # pylint: disable=g-import-not-at-top
  config = config_loading.load_config(str(path), list(overrides)).to_dict()
  return {f: config[f] for f in _POLICY_FIELDS}


@pytest.mark.parametrize('policy, defaults', [
    ('fixed', {}),
    ('step', {'lr_decay_factor': 0.1, 'lr_step_percent': 100 / 3}),
    ('multistep', {'lr_decay_factor': 0.5,
                   'lr_multistep_percents': (50.0, 85.0)}),
    ('exp', {'lr_decay_factor': 0.95}),
    ('inv', {'lr_decay_factor': 0.1, 'lr_power': 0.5}),
    ('poly', {'lr_power': 3.0}),
    ('sigmoid', {'lr_decay_factor': 0.1, 'lr_step_percent': 50.0}),
])
def test_each_policy_takes_digits_defaults(policy, defaults):
  """The fields a policy reads get DIGITS' defaults; the others are fixed."""
  unread = {'lr_decay_factor': 0.1, 'lr_step_percent': 100 / 3,
            'lr_multistep_percents': (50.0, 75.0), 'lr_power': 1.0}
  assert _policy_fields(f'--config.lr_policy={policy}') == {**unread,
                                                            **defaults}


def test_a_policy_field_the_user_sets_wins(tmp_path):
  assert _policy_fields('--config.lr_policy=exp',
                        '--config.lr_decay_factor=0.5')['lr_decay_factor'] == 0.5
  # Set in a config file to the value other policies leave there.
  path = tmp_path / 'exp_gamma.py'
  path.write_text('from configs import default\n'
                  'def get_config():\n'
                  '  config = default.get_config()\n'
                  "  config.lr_policy = 'exp'\n"
                  '  config.lr_decay_factor = 0.1\n'
                  '  config.lr_power = 2.0\n'
                  '  return config\n')
  fields = _policy_fields(path=path)
  assert fields['lr_decay_factor'] == 0.1  # Not exp's 0.95.
  assert fields['lr_power'] == 2.0  # Not the unread 1.0.


def test_step_policy_resolves_to_what_its_runs_recorded(tmp_path):
  """A default run's resolved config is today's, and resumes its folders."""
  from lettercnn import config_loading  # pylint: disable=g-import-not-at-top
  from lettercnn.run import workdir as workdir_guard  # pylint: disable=g-import-not-at-top
  config = config_loading.load_config('configs/lr_1e-4.py', [])
  recorded = json.loads(json.dumps(config.to_dict()))
  assert {f: recorded[f] for f in _POLICY_FIELDS} == _STEP_POLICY_RECORD
  base = json.loads(json.dumps(default.get_config().to_dict()))
  assert {k for k in base if base[k] != recorded[k]} == set(_POLICY_FIELDS)
  status = {'status': 'running', 'step': 0,
            'config': {**recorded, **_STEP_POLICY_RECORD}}
  (tmp_path / 'status.json').write_text(json.dumps(status))
  assert workdir_guard.existing_run(config, str(tmp_path), 1) == status
  # A run of another policy from before its defaults: named, not mixed.
  status['config']['lr_policy'] = 'exp'
  (tmp_path / 'status.json').write_text(json.dumps(status))
  exp = config_loading.load_config('configs/lr_1e-4.py',
                                   ['--config.lr_policy=exp'])
  with pytest.raises(ValueError, match='lr_decay_factor: 0.1 there vs 0.95 '
                     'now'):
    workdir_guard.existing_run(exp, str(tmp_path), 1)
