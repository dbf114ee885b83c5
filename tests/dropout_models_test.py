"""Models with dropout in the train loop: masks from (seed, step), resumable.

The train step draws its dropout masks from the run's seed, the global step
and the device index alone; evaluation has none. So a resumed run trains
exactly as an unbroken one, with nothing random in its checkpoints.
"""

import functools
import signal

from flax import jax_utils
from flax import serialization
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lettercnn.run import checkpoints as checkpointing
from lettercnn.data import input_pipeline
from lettercnn.models import networks as models
from lettercnn.run import status as run_status
from lettercnn.run import events as tb_events
from lettercnn import train
from lettercnn.run import signals

_p_train_step = jax.pmap(train.train_step, axis_name='batch')
_digest = checkpointing.array_digest

_SIZES = {'lenet': (28, 1), 'lenet_tf': (28, 1),
          'alexnet': (models.AlexNet.min_image_size, 3)}


@functools.cache
def _initial_state(name: str) -> train.TrainState:
  """`name`'s state for 2 classes, seed 0, at a constant learning rate.

  Constant, so that two steps differ only in their dropout masks. Cached:
  AlexNet's parameters take seconds to draw.
  """
  size, channels = _SIZES[name]
  return train.create_train_state(
      jax.random.key(0), models.create_model(name, 2),
      (size, size, channels), optax.sgd(0.01))


def _one_step(name: str, step: int, seed_state: train.TrainState | None = None):
  """Params after one step from global step `step`, and each device's loss.

  Both devices get the same images and labels, so their losses differ only
  by their dropout masks. `seed_state` lends its dropout key (its seed's).
  """
  state = _initial_state(name)
  size, channels = _SIZES[name]
  images = np.random.default_rng(0).uniform(0, 255, (2, size, size, channels))
  batch = {'image': np.broadcast_to(images, (2,) + images.shape).astype(
               np.float32),
           'label': np.array([[0, 1], [0, 1]], np.int32)}
  state = state.replace(step=step)
  if seed_state is not None:
    state = state.replace(dropout_key=seed_state.dropout_key)
  metrics = jax_utils.replicate(train.Metrics.empty())
  state, metrics = _p_train_step(jax_utils.replicate(state), metrics, batch)
  assert int(state.step[0]) == step + 1
  return jax_utils.unreplicate(state.params), np.asarray(metrics.loss.total)


@pytest.mark.parametrize('name', ['lenet_tf', 'alexnet'])
def test_train_step_masks_depend_on_step_and_device(name):
  params, losses = _one_step(name, 5)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  assert _digest(params) != _digest(_initial_state(name).params)
  # The same (seed, step): the same masks, bit for bit.
  again, again_losses = _one_step(name, 5)
  assert _digest(params) == _digest(again)
  np.testing.assert_array_equal(losses, again_losses)
  # Another step: other masks.
  assert _digest(params) != _digest(_one_step(name, 6)[0])
  # Each device's share of the batch gets masks of its own.
  assert losses[0] != losses[1]


def test_train_step_masks_depend_on_seed():
  other_seed = train.create_train_state(  # Any model: the key is the seed's.
      jax.random.key(1), models.create_model('lenet', 2), (16, 16, 1),
      optax.sgd(0.01))
  assert other_seed.dropout_key != _initial_state('lenet_tf').dropout_key
  assert (_digest(_one_step('lenet_tf', 5)[0])
          != _digest(_one_step('lenet_tf', 5, other_seed)[0]))


def test_train_step_without_dropout_ignores_the_step():
  """Caffe's LeNet: the key is drawn but nothing uses it."""
  params, losses = _one_step('lenet', 5)
  assert _digest(params) == _digest(_one_step('lenet', 6)[0])
  assert losses[0] == losses[1]


def test_dropout_key_is_not_in_checkpoints():
  """A static field: the state's arrays are those of flax's TrainState."""
  state = _initial_state('lenet_tf')
  plain = train_state.TrainState.create(
      apply_fn=state.apply_fn, params=state.params, tx=state.tx)
  assert (jax.tree.structure(serialization.to_state_dict(state))
          == jax.tree.structure(serialization.to_state_dict(plain)))


@pytest.mark.parametrize('name', ['lenet_tf', 'alexnet'])
def test_eval_step_is_deterministic_without_dropout(name):
  state = _initial_state(name)
  size, channels = _SIZES[name]
  model = models.create_model(name, 2)
  batch = {'image': jnp.asarray(np.random.default_rng(1).uniform(
               0, 255, (3, size, size, channels)), jnp.float32),
           'label': jnp.array([0, 1, 1], jnp.int32),
           'mask': jnp.array([True, True, False])}
  eval_step = jax.jit(train.eval_step, static_argnums=1)
  first = eval_step(state.params, model.apply, batch)
  assert first.compute() == eval_step(state.params, model.apply,
                                      batch).compute()
  # The deterministic forward pass, on the two unmasked images.
  logits = model.apply({'params': state.params}, batch['image'])
  expected = optax.softmax_cross_entropy_with_integer_labels(
      logits, batch['label'])[:2].mean()
  assert float(first.compute()['loss']) == pytest.approx(float(expected),
                                                         rel=1e-6)


def _record_chunk_calls(monkeypatch, signal_at_call: int = 0) -> list:
  """Records (first global step, steps) of every train chunk call.

  With `signal_at_call`, SIGTERM arrives during that call: the run stops
  before the next one and checkpoints the step it reached.
  """
  calls = []
  real_call = train.ChunkedTrainStep.__call__

  def call(self, state, train_metrics, chunk):
    calls.append((int(state.step[0]), input_pipeline.chunk_steps(chunk)))
    if len(calls) == signal_at_call:
      signal.raise_signal(signal.SIGTERM)
    return real_call(self, state, train_metrics, chunk)

  monkeypatch.setattr(train.ChunkedTrainStep, '__call__', call)
  return calls


def test_lenet_tf_learns_and_resumes_bit_identically(tiny_config, tmp_path,
                                                      monkeypatch):
  """A run stopped mid-epoch draws the same masks on: it ends bit-identical.

  30 steps an epoch, chunks cut at the log interval (10): the signal in
  the second call stops the run at step 20, mid-epoch 1.
  """
  config = tiny_config
  config.model = 'lenet_tf'
  config.batch_size = 2  # Over the two simulated devices.
  config.num_epochs = 6
  # What lets the ReLU LeNet learn from 60 images in seconds.
  config.mean_subtraction = 'image'
  config.learning_rate = 3e-3
  config.lr_policy = 'fixed'
  straight_dir, stopped_dir = str(tmp_path / 'straight'), str(tmp_path / 'run')

  straight_calls = _record_chunk_calls(monkeypatch)
  straight = train.train_and_evaluate(config, straight_dir)
  assert straight_calls == [(step, 10) for step in range(0, 180, 10)]
  epoch_losses = [v for _, v in
                  tb_events.read_scalars(straight_dir)['epoch_train_loss']]
  assert epoch_losses[-1] < 0.85 * epoch_losses[0]
  assert straight['final']['train_accuracy'] >= 0.25  # Chance: 0.1.

  _record_chunk_calls(monkeypatch, signal_at_call=2)
  with pytest.raises(signals.Preempted, match='at step 20;'):
    train.train_and_evaluate(config, stopped_dir)
  resumed_calls = _record_chunk_calls(monkeypatch)
  resumed = train.train_and_evaluate(config, stopped_dir)

  # It trained on from the checkpoint, not again from step 0.
  assert resumed_calls == [(step, 10) for step in range(20, 180, 10)]
  assert resumed['params_sha256'] == straight['params_sha256']
  assert resumed['final'] == straight['final']
  assert (tb_events.read_scalars(stopped_dir)
          == tb_events.read_scalars(straight_dir))


def test_alexnet_trains_and_resumes_at_its_smallest_size(tiny_config, tmp_path,
                                                         monkeypatch):
  """Two epochs of 15 steps, chunks [0, 10), [10, 15), [15, 20), [20, 30).

  The signal in the third call stops the run at step 20, mid-epoch 2.
  """
  config = tiny_config
  config.model = 'alexnet'
  config.image_size = models.AlexNet.min_image_size
  config.grayscale = False
  config.examples_per_class = 4  # 3 training images a letter: 15 steps.
  config.batch_size = 2
  straight_dir, stopped_dir = str(tmp_path / 'straight'), str(tmp_path / 'run')

  straight_calls = _record_chunk_calls(monkeypatch)
  straight = train.train_and_evaluate(config, straight_dir)
  assert straight_calls == [(0, 10), (10, 5), (15, 5), (20, 10)]
  assert straight['status'] in (run_status.CONVERGED, run_status.NOT_CONVERGED)
  assert np.isfinite(straight['final']['train_loss'])
  assert np.isfinite(straight['final']['val_loss'])

  _record_chunk_calls(monkeypatch, signal_at_call=3)
  with pytest.raises(signals.Preempted, match='at step 20;'):
    train.train_and_evaluate(config, stopped_dir)
  resumed_calls = _record_chunk_calls(monkeypatch)
  resumed = train.train_and_evaluate(config, stopped_dir)

  assert resumed_calls == [(20, 10)]
  assert resumed['params_sha256'] == straight['params_sha256']
  assert resumed['final'] == straight['final']
