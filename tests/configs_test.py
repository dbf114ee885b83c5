"""Every configs/lr_*.py is the default config with only its learning rate set."""

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
