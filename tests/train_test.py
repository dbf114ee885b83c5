"""The training loop: a short two-device run end to end."""

import jax
import pytest

from lettercnn.data import input_pipeline
from lettercnn.models import networks as models
from lettercnn.run import status as run_status
from lettercnn.run import events as tb_events
from lettercnn import train


def test_two_device_run_learns_and_logs_every_scalar(tiny_config, tmp_path):
  assert jax.local_device_count() == 2
  config = tiny_config
  config.batch_size = 2
  config.num_epochs = 3
  config.learning_rate = 1e-3
  config.lr_step_percent = 200 / 3  # After 2 of the 3 epochs.
  config.log_every_steps = 1
  config.divergence_loss_factor = 100.0  # Single-step losses are noisy.
  workdir = str(tmp_path)

  status = train.train_and_evaluate(config, workdir)

  steps_per_epoch = 60 // 2  # 6 train images per letter, batch 2.
  assert status['status'] in (run_status.CONVERGED, run_status.NOT_CONVERGED)
  assert status['step'] == 3 * steps_per_epoch
  scalars = tb_events.read_scalars(workdir)
  for tag in ('train_loss', 'train_accuracy', 'learning_rate'):
    assert [s for s, _ in scalars[tag]] == list(range(1, 3 * steps_per_epoch + 1))
  for tag in ('epoch_train_loss', 'epoch_train_accuracy', 'val_loss',
              'val_accuracy'):
    assert [s for s, _ in scalars[tag]] == [30, 60, 90]
  epoch_losses = [v for _, v in scalars['epoch_train_loss']]
  assert epoch_losses[-1] < 0.8 * epoch_losses[0]
  rates = dict(scalars['learning_rate'])
  boundary = 2 * steps_per_epoch
  assert rates[boundary] == pytest.approx(1e-3)
  assert rates[boundary + 1] == pytest.approx(1e-4)
  assert status['final']['val_accuracy'] == dict(scalars['val_accuracy'])[90]


def test_the_loop_pads_chunks_to_the_pipelines_chunk_length(
    tiny_config, tmp_path, monkeypatch):
  # 3 steps of batch 2 fit (28x28x1 float32 images): chunks of 3, not 64.
  monkeypatch.setattr(input_pipeline, '_CHUNK_BYTES', 3 * 2 * 28 * 28 * 4)
  calls = []
  real_call = train.ChunkedTrainStep.__call__

  def call(self, state, carry, chunk):
    calls.append((self._max_steps, input_pipeline.chunk_steps(chunk)))  # pylint: disable=protected-access
    return real_call(self, state, carry, chunk)

  monkeypatch.setattr(train.ChunkedTrainStep, '__call__', call)
  config = tiny_config
  config.num_epochs = 1
  config.batch_size = 2

  status = train.train_and_evaluate(config, str(tmp_path))

  assert status['step'] == 30
  assert {max_steps for max_steps, _ in calls} == {3}
  # Cut at multiples of 3 and of log_every_steps (10).
  assert [steps for _, steps in calls] == [3, 3, 3, 1, 2, 3, 3, 2, 1, 3, 3, 3]


@pytest.mark.parametrize('optimizer', ['sgd', 'momentum', 'nesterov', 'adagrad',
                                       'rmsprop', 'adadelta', 'adam'])
def test_every_solver_trains_a_real_epoch(tiny_config, tmp_path, optimizer):
  config = tiny_config
  config.optimizer = optimizer
  config.num_epochs = 1
  config.batch_size = 2
  config.learning_rate = 1e-3

  status = train.train_and_evaluate(config, str(tmp_path))

  assert status['step'] == 30  # 60 training images, batch 2.
  assert status['status'] != run_status.DIVERGED
  scalars = tb_events.read_scalars(str(tmp_path))
  losses = [v for _, v in scalars['train_loss']]
  assert len(losses) == 3 and all(0 < v < 10 for v in losses)
  assert status['params_sha256'] is not None


@pytest.mark.parametrize('per_device_batch, lowering',
                         [(1, 'matmul'), (2, 'matmul_chwn'),
                          (128, 'matmul_chwn')])
def test_training_lowering_depends_on_the_batch(per_device_batch, lowering):
  # Batch 1 keeps the NHWC lowering its runs were made with (bit-identical
  # results); larger batches train with the batch as the minor axis.
  devices = jax.local_devices()
  lenet = models.create_model('lenet', 10)
  assert train.training_model(lenet, devices,
                               per_device_batch).lowering == lowering
  alexnet = models.create_model('alexnet', 10)
  assert train.training_model(alexnet, devices,
                               per_device_batch).lowering == 'xla'


def test_the_finished_status_comes_after_the_confusion_image_is_on_disk(
    tiny_config, tmp_path, monkeypatch):
  """A kill right after the finished status.json must lose nothing."""
  workdir = str(tmp_path)
  seen = {}
  real_save = run_status.save

  def save(folder, status):
    if status['status'] in run_status.FINISHED:
      seen['images'] = tb_events.read_images(folder)
    real_save(folder, status)

  monkeypatch.setattr(run_status, 'save', save)
  tiny_config.num_epochs = 1
  tiny_config.batch_size = 2
  status = train.train_and_evaluate(tiny_config, workdir)

  assert status['status'] in run_status.FINISHED
  assert [step for step, _ in seen['images']['val_confusion_matrix']] == [
      status['step']]


@pytest.mark.parametrize('loss, diverged', [
    (5.0 * 2.0 * 0.999, False), (5.0 * 2.0 * 1.001, True),
    (float('nan'), True), (float('inf'), True)])
def test_a_finite_loss_above_the_factor_diverges(loss, diverged):
  assert train._has_diverged(loss, 2.0, 5.0) is diverged  # pylint: disable=protected-access


@pytest.mark.parametrize('best, accuracy, new', [
    (None, 0.1, True), ({'val_accuracy': 0.5}, 0.5, False),
    ({'val_accuracy': 0.5}, 0.5001, True), ({'val_accuracy': 0.5}, 0.4, False)])
def test_the_first_epoch_to_reach_the_best_accuracy_stays_best(
    best, accuracy, new):
  assert train._is_new_best(best, accuracy) is new  # pylint: disable=protected-access


@pytest.mark.parametrize('train_accuracy, status', [
    (0.15, run_status.NOT_CONVERGED), (0.1501, run_status.CONVERGED),
    (0.10, run_status.NOT_CONVERGED), (0.99, run_status.CONVERGED)])
def test_converged_needs_more_than_the_margin_above_chance(
    tiny_config, train_accuracy, status):
  tiny_config.not_converged_margin_points = 5.0  # Chance is 10% of 10 classes.
  assert train._final_status(  # pylint: disable=protected-access
      {'train_accuracy': train_accuracy}, tiny_config, 10) == status
