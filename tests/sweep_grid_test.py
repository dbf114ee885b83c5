"""Tests of lettercnn.sweep.grid beyond what tests/sweep_test.py runs."""

import pytest

from lettercnn import errors
from lettercnn.sweep import grid as sweep_grid

CONFIG = 'configs/lr_1e-4.py'
# The tests simulate 2 devices (conftest.py); batch 1 trains on one.
ONE_DEVICE = ['--config.num_devices=1']


@pytest.mark.parametrize('text, values', [
    ('1,8,32', ['1', '8', '32']),
    ('(50,75),(30, 60)', ['(50,75)', '(30, 60)']),
    ("'a,b',c", ["'a,b'", 'c']),
    ('[1,[2,3]],4', ['[1,[2,3]]', '4']),
])
def test_values_split_at_top_level_commas_only(text, values):
  assert sweep_grid.split_values(text) == values


def test_tuple_values_reach_the_config_whole():
  points = sweep_grid.sweep_points(
      [CONFIG], ['lr_policy=multistep', 'lr_multistep_percents=(50,75),(30,60)'],
      seeds=None, fixed=ONE_DEVICE)

  assert [p.name for p in points] == [
      'lr_1e-4,lr_policy=multistep,lr_multistep_percents=(50,75)',
      'lr_1e-4,lr_policy=multistep,lr_multistep_percents=(30,60)']
  assert points[1].overrides == ('--config.lr_policy=multistep',
                                 '--config.lr_multistep_percents=(30,60)')


def test_a_path_value_names_its_point_without_a_separator():
  (point,) = sweep_grid.sweep_points([CONFIG], ['data_dir=/tmp/data'],
                                     seeds=None, fixed=ONE_DEVICE)
  assert point.name == 'lr_1e-4,data_dir=_tmp_data'
  assert point.overrides == ('--config.data_dir=/tmp/data',)


def test_values_that_name_two_points_alike_are_refused():
  with pytest.raises(errors.InputError,
                     match='two points are both named lr_1e-4,data_dir=_a'):
    sweep_grid.sweep_points([CONFIG], ['data_dir=/a,_a'], seeds=None,
                            fixed=ONE_DEVICE)


def test_a_fixed_override_is_checked_with_every_point():
  with pytest.raises(errors.InputError, match='^lr_1e-4,seed=0: batch_size=3 '
                     'does not divide'):
    sweep_grid.sweep_points(
        [CONFIG], [], seeds='1',
        fixed=['--config.batch_size=3', '--config.num_devices=0'])
