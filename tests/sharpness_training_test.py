"""Sharpness measured during training: when, what, and that it leaves training alone."""

import pytest

from lettercnn.run import status as run_status
from lettercnn.optim import schedules
from lettercnn.run import events as tb_events
from lettercnn import train


def _run(config, workdir):
  config.sharpness_max_iterations = 20  # A few products: this tests when.
  config.batch_size = 2
  config.num_epochs = 1
  config.learning_rate = 1e-3
  config.log_every_steps = 7
  return train.train_and_evaluate(config, str(workdir))


def test_sharpness_is_logged_every_n_steps_and_leaves_training_alone(
    tiny_config, tmp_path):
  plain = _run(tiny_config.copy_and_resolve_references(), tmp_path / 'off')
  tiny_config.sharpness_every_steps = 8
  tiny_config.sharpness_examples = 16
  status = _run(tiny_config, tmp_path / 'on')

  assert status['status'] != run_status.DIVERGED
  scalars = tb_events.read_scalars(str(tmp_path / 'on'))
  # 60 images at batch 2: 30 steps; measured at 0 and every 8th step.
  assert [s for s, _ in scalars['sharpness']] == list(range(0, 31, 8))
  assert all(v > 0 for _, v in scalars['sharpness'])
  # The limit is 2(1 + mu) / lr for the rate of the coming step.
  schedule = schedules.create(tiny_config, 30)
  limits = dict(scalars['sharpness_limit'])
  assert limits == {s: pytest.approx(2 * 1.9 / float(schedule(s)))
                    for s in range(0, 31, 8)}
  assert limits[0] == pytest.approx(3800) and limits[16] == pytest.approx(38000)
  initial = status['initial_sharpness']
  assert initial['lambda_max'] == pytest.approx(dict(scalars['sharpness'])[0])
  assert initial['bound'] == pytest.approx(3.8 / initial['lambda_max'])
  # Train scalars are still cut at their own period, apart from these cuts.
  assert [s for s, _ in scalars['train_loss']] == [7, 14, 21, 28, 30]
  assert [s for s, _ in scalars['learning_rate']] == [7, 14, 21, 28, 30]
  # Off (the default), nothing is measured; on, the measurements only read
  # the parameters: training ends where it does without them.
  assert 'sharpness' not in tb_events.read_scalars(str(tmp_path / 'off'))
  assert 'initial_sharpness' not in plain
  assert status['params_sha256'] == plain['params_sha256']
