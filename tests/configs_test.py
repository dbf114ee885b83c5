"""Every configs/lr_*.py and configs/tf/lr_*.py is its default with only the rate set."""

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
