"""Training loop: pmap-ed SGD-momentum steps, per-epoch evaluation, TensorBoard.

Data flows one way: config -> input pipeline -> train loop -> writers -> status.
"""

import functools
import math
import signal
import time
from typing import Any, Callable

from absl import logging
from clu import metric_writers
from clu import metrics
import flax
from flax import jax_utils
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import optax

from lettercnn import checkpointing
from lettercnn import config_checks
from lettercnn import input_pipeline
from lettercnn import models
from lettercnn import progress
from lettercnn import run_status
from lettercnn import tb_events


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy


def create_learning_rate_schedule(config: ml_collections.ConfigDict,
                                  steps_per_epoch: int) -> optax.Schedule:
  """DIGITS' "step down": x lr_decay_factor every lr_decay_every_epochs epochs.

  The schedule is indexed by the number of updates already applied, so the
  first step with the decayed rate is step `boundary + 1` (1-based).
  """
  total_steps = config.num_epochs * steps_per_epoch
  every_steps = config.lr_decay_every_epochs * steps_per_epoch
  boundaries = range(every_steps, total_steps, every_steps)
  return optax.piecewise_constant_schedule(
      init_value=config.learning_rate,
      boundaries_and_scales={b: config.lr_decay_factor for b in boundaries})


def _is_bias(params: Any) -> Any:
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path[-1].key == 'bias', params)


def create_optimizer(config: ml_collections.ConfigDict,
                     schedule: optax.Schedule) -> optax.GradientTransformation:
  """Caffe's SGD as DIGITS configures it for LeNet.

  L2 weight decay of learning_rate * weight_decay_per_lr on every parameter,
  biases at twice the learning rate (LeNet's `lr_mult: 2`), then momentum.
  """
  return optax.chain(
      optax.add_decayed_weights(config.learning_rate *
                                config.weight_decay_per_lr),
      optax.masked(optax.scale(2.0), _is_bias),
      optax.sgd(schedule, momentum=config.momentum),
  )


def create_train_state(rng: jax.Array, model: flax.linen.Module,
                       image_shape: tuple[int, ...],
                       tx: optax.GradientTransformation) -> train_state.TrainState:
  """Initialises parameters for images of `image_shape` (H, W, C)."""
  params = model.init(rng, jnp.zeros((1,) + image_shape, jnp.float32))['params']
  return train_state.TrainState.create(apply_fn=model.apply, params=params,
                                       tx=tx)


def _loss_and_logits(params, apply_fn: Callable[..., jax.Array],
                     batch: dict[str, jax.Array]):
  logits = apply_fn({'params': params}, batch['image'])
  losses = optax.softmax_cross_entropy_with_integer_labels(logits,
                                                           batch['label'])
  return losses, logits


def train_step(state: train_state.TrainState, train_metrics: TrainMetrics,
               batch: dict[str, jax.Array]):
  """One SGD step on one device's share of the batch (run under pmap).

  Gradients are averaged over the 'batch' device axis; metrics stay per
  device and are only reduced when read, so a step never waits for the host.
  """

  def loss_fn(params):
    losses, logits = _loss_and_logits(params, state.apply_fn, batch)
    return losses.mean(), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  grads = lax.pmean(grads, axis_name='batch')
  state = state.apply_gradients(grads=grads)
  train_metrics = train_metrics.merge(TrainMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch['label']))
  return state, train_metrics


def eval_step(params, apply_fn: Callable[..., jax.Array],
              batch: dict[str, jax.Array]) -> EvalMetrics:
  """Metrics of one padded validation batch; padding is masked out."""
  losses, logits = _loss_and_logits(params, apply_fn, batch)
  return EvalMetrics.single_from_model_output(
      loss=losses, logits=logits, labels=batch['label'], mask=batch['mask'])


def evaluate(params, apply_fn: Callable[..., jax.Array],
             pipeline: input_pipeline.Pipeline,
             batch_size: int) -> dict[str, float]:
  """Loss and accuracy over the whole validation split, each example once."""
  jit_eval_step = jax.jit(eval_step, static_argnums=1)
  totals = None
  for batch in pipeline.validation_batches(batch_size):
    batch_metrics = jit_eval_step(params, apply_fn, batch)
    totals = batch_metrics if totals is None else totals.merge(batch_metrics)
  return {k: float(v) for k, v in totals.compute().items()}


class _TrainMetricsAccumulator:
  """Train metrics summed on device, read (one host sync) when flushed.

  `on_device` holds one collection per device since the last flush;
  `epoch_total` (on the host) merges the flushed intervals of this epoch.
  """

  def __init__(self, devices: list[jax.Device]):
    self._devices = devices
    self.on_device = self._empty_on_device()
    self.epoch_total = TrainMetrics.empty()

  def _empty_on_device(self) -> TrainMetrics:
    return jax_utils.replicate(TrainMetrics.empty(), self._devices)

  def flush(self) -> dict[str, float]:
    """Returns the interval's loss and accuracy and starts a new interval."""
    interval = jax.device_get(self.on_device).reduce()
    self.on_device = self._empty_on_device()
    self.epoch_total = self.epoch_total.merge(interval)
    return {k: float(v) for k, v in interval.compute().items()}

  def flush_epoch(self) -> dict[str, float]:
    """Returns the whole epoch's loss and accuracy (call after `flush`)."""
    epoch = {k: float(v) for k, v in self.epoch_total.compute().items()}
    self.epoch_total = TrainMetrics.empty()
    return epoch

  def snapshot(self) -> dict[str, TrainMetrics]:
    return {'interval': jax.device_get(self.on_device),
            'epoch': jax.device_get(self.epoch_total)}

  def restore(self, arrays: dict[str, TrainMetrics]) -> None:
    sharding = jax.tree.leaves(self.on_device)[0].sharding
    self.on_device = jax.device_put(arrays['interval'], sharding)
    self.epoch_total = arrays['epoch']


class Preempted(Exception):
  """SIGTERM or SIGINT arrived; the run saved a checkpoint and must exit."""

  def __init__(self, signum: int):
    super().__init__(f'stopped by signal {signum}; checkpoint saved')
    self.exit_code = 128 + signum


class _StopSignals:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self) -> '_StopSignals':
    for signum in (signal.SIGTERM, signal.SIGINT):
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    del frame
    logging.warning('Signal %d: saving a checkpoint before exiting.', signum)
    self.signum = signum

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def _hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as TensorBoard hparams (which accept no None)."""
  return {k: ('None' if v is None else v) for k, v in config.items()}


def _has_diverged(loss: float, reference_loss: float, factor: float) -> bool:
  return not math.isfinite(loss) or loss > factor * reference_loss


def _final_status(status: dict[str, Any], config: ml_collections.ConfigDict,
                  num_classes: int) -> str:
  chance_points = 100.0 / num_classes
  final_points = 100.0 * status['final']['train_accuracy']
  if final_points - chance_points <= config.not_converged_margin_points:
    return run_status.NOT_CONVERGED
  return run_status.CONVERGED


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains `config` into `workdir`, resuming what is there; returns its status.

  Raises InputError for a bad config or a workdir of another config before any
  data is built, and Preempted after saving a checkpoint on SIGTERM/SIGINT.
  """
  start_time = time.monotonic()
  num_devices = config_checks.check_config(config)
  status = run_status.existing_run(config, workdir)
  if status is not None and status['status'] in run_status.FINISHED:
    logging.info('Run in %s already finished: %s.', workdir,
                 run_status.describe(status))
    return status
  devices = jax.local_devices()[:num_devices]
  logging.info('Training on %d %s device(s), global batch %d.', num_devices,
               jax.default_backend(), config.batch_size)

  pipeline = input_pipeline.Pipeline(config, num_devices)
  steps_per_epoch = pipeline.steps_per_epoch
  total_steps = config.num_epochs * steps_per_epoch
  num_classes = pipeline.splits.num_classes
  logging.info('%d train / %d validation images, %d classes, %d steps/epoch.',
               pipeline.splits.num_train, pipeline.splits.num_validation,
               num_classes, steps_per_epoch)

  schedule = create_learning_rate_schedule(config, steps_per_epoch)
  model = models.create_model(config.model, num_classes)
  channels = 1 if config.grayscale else 3
  state = create_train_state(
      jax.random.key(config.seed), model,
      (config.image_size, config.image_size, channels),
      create_optimizer(config, schedule))
  apply_fn = state.apply_fn
  train_metrics = _TrainMetricsAccumulator(devices)

  checkpointer = checkpointing.Checkpointer(workdir)
  snapshot = checkpointer.restore_latest(
      {'state': state, 'metrics': train_metrics.snapshot()})
  if snapshot is None:
    step = 0
    status = {
        'status': run_status.RUNNING, 'step': 0, 'epoch': 0.0,
        'num_epochs': config.num_epochs, 'steps_per_epoch': steps_per_epoch,
        'num_classes': num_classes, 'final': None, 'best': None,
        'wall_time_s': 0.0, 'params_sha256': None,
        'config': config.to_dict(),
    }
  else:
    step = snapshot.step
    status = snapshot.meta
    state = snapshot.arrays['state']
    train_metrics.restore(snapshot.arrays['metrics'])
    logging.info('Resuming from the checkpoint at step %d.', step)
  tb_events.drop_events_after(workdir, step)
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  if step == 0:
    writer.write_hparams(_hparams(config))
  run_status.write(workdir, status)
  wall_time_before = status['wall_time_s']

  def save_checkpoint() -> None:
    status['wall_time_s'] = wall_time_before + time.monotonic() - start_time
    checkpointer.save(checkpointing.Snapshot(
        step=step, meta=status, arrays={
            'state': jax.tree.map(lambda x: x[0], jax.device_get(state)),
            'metrics': train_metrics.snapshot()}))

  p_train_step = jax.pmap(train_step, axis_name='batch', devices=devices,
                          donate_argnums=(0, 1))
  state = jax_utils.replicate(state, devices)
  # An untrained network predicts about uniformly: cross-entropy ln(classes).
  reference_loss = math.log(num_classes)
  reporter = progress.ProgressLogger(total_steps, config.batch_size,
                                     steps_per_epoch, start_step=step)
  diverged = False
  with _StopSignals() as stop:
    for epoch in range(step // steps_per_epoch, config.num_epochs):
      epoch_end = (epoch + 1) * steps_per_epoch
      batches = jax_utils.prefetch_to_device(
          pipeline.train_batches(epoch, start_step=step % steps_per_epoch), 2,
          devices)
      for batch in batches:
        if stop.signum is not None:
          save_checkpoint()
          writer.flush()
          raise Preempted(stop.signum)
        state, train_metrics.on_device = p_train_step(
            state, train_metrics.on_device, batch)
        step += 1
        reporter.maybe_log(step)
        if step % config.log_every_steps and step != epoch_end:
          continue
        interval = train_metrics.flush()
        writer.write_scalars(step, {
            'train_loss': interval['loss'],
            'train_accuracy': interval['accuracy'],
            'learning_rate': float(schedule(step - 1)),
        })
        if _has_diverged(interval['loss'], reference_loss,
                         config.divergence_loss_factor):
          logging.warning('Diverged at step %d: training loss %g.', step,
                          interval['loss'])
          diverged = True
          break
      params = jax.tree.map(lambda x: x[0], state.params)
      status['step'] = step
      status['epoch'] = step / steps_per_epoch
      status['params_sha256'] = checkpointing.array_digest(params)
      if diverged:
        status['status'] = run_status.DIVERGED
        status['final'] = {'train_loss': interval['loss'],
                           'train_accuracy': interval['accuracy'],
                           'val_loss': None, 'val_accuracy': None}
        break
      epoch_train = train_metrics.flush_epoch()
      val = evaluate(params, apply_fn, pipeline, config.eval_batch_size)
      writer.write_scalars(step, {
          'epoch_train_loss': epoch_train['loss'],
          'epoch_train_accuracy': epoch_train['accuracy'],
          'val_loss': val['loss'],
          'val_accuracy': val['accuracy'],
      })
      writer.flush()
      logging.info('Epoch %d/%d: train loss %.4f acc %.4f, val loss %.4f acc '
                   '%.4f', epoch + 1, config.num_epochs, epoch_train['loss'],
                   epoch_train['accuracy'], val['loss'], val['accuracy'])
      status['final'] = {'train_loss': epoch_train['loss'],
                         'train_accuracy': epoch_train['accuracy'],
                         'val_loss': val['loss'],
                         'val_accuracy': val['accuracy']}
      if (status['best'] is None
          or val['accuracy'] > status['best']['val_accuracy']):
        status['best'] = {'val_accuracy': val['accuracy'], 'epoch': epoch + 1}
      if ((epoch + 1) % config.checkpoint_every_epochs == 0
          or epoch + 1 == config.num_epochs):
        save_checkpoint()
      run_status.write(workdir, status)

  if not diverged:
    status['status'] = _final_status(status, config, num_classes)
  status['wall_time_s'] = wall_time_before + time.monotonic() - start_time
  run_status.write(workdir, status)
  writer.close()
  checkpointer.close()
  logging.info('Run %s in %.0f s.', run_status.describe(status),
               status['wall_time_s'])
  return status
