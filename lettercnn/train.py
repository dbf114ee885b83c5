"""Training loop: pmap-ed train steps, per-epoch evaluation, TensorBoard.

Data flows one way: config -> input pipeline -> train loop -> writers -> status.
"""

import functools
import math
import time
from typing import Any, Callable

from absl import logging
from clu import metric_writers
from clu import metrics
from clu import periodic_actions
import flax
from flax import jax_utils
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lettercnn.run import checkpoints as checkpointing
from lettercnn import config_checks
from lettercnn import confusion
from lettercnn import distributed
from lettercnn.data import input_pipeline
from lettercnn.models import networks as models
from lettercnn.optim import optimizers
from lettercnn.run import inputs as run_inputs
from lettercnn.run import status as run_status
from lettercnn.optim import schedules
from lettercnn.optim import sharpness
from lettercnn.run import events
from lettercnn.run import signals


@flax.struct.dataclass
class Metrics(metrics.Collection):
  """Mean loss and accuracy, of training steps and of validation batches."""
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy


class TrainState(train_state.TrainState):
  """flax's TrainState, with the key that dropout draws its masks from.

  `dropout_key` is a key's raw data as Python ints: a static field, so it is
  compiled into the step rather than an array of the state. Checkpoints hold
  no more than they did without it, and a resumed run rebuilds it from its
  seed exactly as the first process did; `train_step` folds in the step.
  """
  dropout_key: tuple[int, ...] = flax.struct.field(pytree_node=False)


def create_train_state(rng: jax.Array, model: flax.linen.Module,
                       image_shape: tuple[int, ...],
                       tx: optax.GradientTransformation) -> TrainState:
  """Initialises parameters for images of `image_shape` (H, W, C).

  The dropout key is the second key of `rng`'s split, a stream apart from the
  parameters', which flax draws from `rng` itself (so a model's initial
  parameters do not depend on whether it has dropout).
  """
  params = model.init(rng, jnp.zeros((1,) + image_shape, jnp.float32))['params']
  dropout_key = jax.random.key_data(jax.random.split(rng)[1])
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                           dropout_key=tuple(np.asarray(dropout_key).tolist()))


def _loss_and_logits(params, apply_fn: Callable[..., jax.Array],
                     batch: dict[str, jax.Array], **apply_kwargs):
  """Per-example losses and the logits; `apply_kwargs` go to `apply_fn`.

  Without them (evaluation) the model runs with train=False: no dropout.
  """
  logits = apply_fn({'params': params}, batch['image'], **apply_kwargs)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits,
                                                           batch['label'])
  return losses, logits


def train_step(state: TrainState, train_metrics: Metrics,
               batch: dict[str, jax.Array]):
  """One SGD step on one device's share of the batch (run under pmap).

  Gradients are averaged over the 'batch' device axis; metrics stay per
  device and are only reduced when read, so a step never waits for the host.

  The model runs with train=True. Its dropout key is the state's folded with
  the global step and then the device index: masks depend on (seed, step)
  alone, so a resumed run draws exactly the masks an unbroken one draws, with
  no random state to checkpoint, and each device's share of the batch gets
  masks of its own.
  """
  dropout_key = jax.random.wrap_key_data(
      jnp.asarray(state.dropout_key, jnp.uint32))
  dropout_key = jax.random.fold_in(
      jax.random.fold_in(dropout_key, state.step), lax.axis_index('batch'))

  def loss_fn(params):
    losses, logits = _loss_and_logits(params, state.apply_fn, batch,
                                      train=True,
                                      rngs={'dropout': dropout_key})
    return losses.mean(), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  if lax.axis_size('batch') > 1:
    # On one device the mean is the identity, but XLA still copies every
    # gradient through an all-reduce (~10% of a batch-1 step on CPU).
    grads = lax.pmean(grads, axis_name='batch')
  state = state.apply_gradients(grads=grads)
  train_metrics = train_metrics.merge(Metrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch['label']))
  return state, train_metrics


def train_chunk(state: train_state.TrainState, train_metrics: Metrics,
                chunk: dict[str, jax.Array], num_steps: jax.Array):
  """`train_step` on the first `num_steps` batches of `chunk` in turn (pmap-ed).

  `chunk` holds one device's share of consecutive steps' batches, shaped
  (max_steps, per_device_batch, ...); batches past `num_steps` are padding
  and never read. Each step is a separate SGD update at the learning rate of
  its own step, and the metrics add up every step: exactly `train_step`
  called once per batch, without a dispatch and host round trip per step.
  The step count is an argument, not a shape, so every chunk length runs
  the same compiled program.
  """

  def body(i, carry):
    batch = jax.tree.map(
        lambda x: lax.dynamic_index_in_dim(x, i, keepdims=False), chunk)
    return train_step(*carry, batch)

  return lax.fori_loop(0, num_steps, body, (state, train_metrics))


# XLA:CPU options for the train chunk: a finer alias analysis, which lets the
# loop update the parameters in place instead of copying them every step.
_CPU_COMPILER_OPTIONS = {'xla_cpu_copy_insertion_use_region_analysis': True}


class ChunkedTrainStep:
  """`chunk_fn` pmap-ed over `devices`, for chunks of up to `max_steps`.

  Called with chunks from `Pipeline.train_chunks`, shaped (devices, steps,
  per_device_batch, ...), for this process's devices of `devices`; shorter
  chunks are padded to `max_steps` (the pipeline's `steps_per_chunk`), so
  one compiled program (with `_CPU_COMPILER_OPTIONS` on CPU) runs them all.
  `chunk_fn(state, carry, chunk, num_steps)` is `train_chunk` (the carry:
  train metrics) or a variant of it that records something else (the LR
  finder's per-step losses). State and carry are donated.
  """

  def __init__(self, devices: list[jax.Device], max_steps: int,
               chunk_fn: Callable[..., Any] = train_chunk):
    self._pmapped = jax.pmap(chunk_fn, axis_name='batch', devices=devices,
                             donate_argnums=(0, 1))
    # Arguments hold a row for each of this process's devices.
    self._num_devices = len(distributed.local_rows(devices))
    self._max_steps = max_steps
    self._options = (_CPU_COMPILER_OPTIONS
                     if devices[0].platform == 'cpu' else None)
    self._compiled = {}

  def __call__(self, state: train_state.TrainState, carry: Any,
               chunk: dict[str, Any]):
    steps = input_pipeline.chunk_steps(chunk)
    if not 0 < steps <= self._max_steps:
      raise ValueError(f'{steps} steps in a chunk of at most {self._max_steps}')
    if steps < self._max_steps:
      chunk = {k: np.pad(v, [(0, 0), (0, self._max_steps - steps)] +
                         [(0, 0)] * (v.ndim - 2)) for k, v in chunk.items()}
    num_steps = np.full((self._num_devices,), steps, np.int32)
    args = (state, carry, chunk, num_steps)
    if jax.process_count() > 1:
      # A program compiled ahead of time takes global arrays in a
      # multi-process run, where pmap itself takes this process's rows; it
      # then compiles without `_CPU_COMPILER_OPTIONS`.
      return self._pmapped(*args)
    key = (jax.tree.structure(args),
           tuple(np.shape(x) for x in jax.tree.leaves(args)))
    if key not in self._compiled:
      self._compiled[key] = self._pmapped.lower(*args).compile(
          compiler_options=self._options)
    return self._compiled[key](*args)


def _split_at_multiples(chunk: dict[str, Any], step: int,
                        periods: tuple[int, ...]) -> list[dict[str, Any]]:
  """Cuts a chunk starting after global step `step` at multiples of `periods`."""
  pieces, start, steps = [], 0, input_pipeline.chunk_steps(chunk)
  while start < steps:
    end = min([steps] + [start + every - (step + start) % every
                         for every in periods])
    pieces.append({k: v[:, start:end] for k, v in chunk.items()})
    start = end
  return pieces


def eval_step(params, apply_fn: Callable[..., jax.Array],
              batch: dict[str, jax.Array]) -> Metrics:
  """Metrics of one padded validation batch; padding is masked out."""
  losses, logits = _loss_and_logits(params, apply_fn, batch)
  return Metrics.single_from_model_output(
      loss=losses, logits=logits, labels=batch['label'], mask=batch['mask'])


_jit_eval_step = jax.jit(eval_step, static_argnums=1)


def evaluate(params, apply_fn: Callable[..., jax.Array],
             pipeline: input_pipeline.Pipeline,
             batch_size: int) -> dict[str, float]:
  """Loss and accuracy over the whole validation split, each example once.

  In a multi-process run each process evaluates its share of the batches,
  and the sums are merged over the processes.
  """
  totals = Metrics.empty()
  for batch in pipeline.validation_batches(batch_size):
    totals = totals.merge(_jit_eval_step(params, apply_fn, batch))
  # Merged as JAX arrays, as one process's are: float32, not numpy's float64.
  totals = functools.reduce(Metrics.merge, [
      jax.tree.map(jnp.asarray, part)
      for part in distributed.gather_hosts(totals)])
  return {k: float(v) for k, v in totals.compute().items()}


# clu's `Metric.reduce` runs a `lax.scan`, which, called eagerly, is traced and
# compiled anew at every call (~50 ms: a sixth of a 500-step interval at batch
# size 1); jitted, it compiles once.
_reduce_over_devices = jax.jit(lambda metrics: metrics.reduce())


class MetricsAccumulator:
  """Train metrics summed on device, read (one host sync) when flushed.

  `on_device` holds one collection per device of this process since the
  last flush; `epoch_total` (on the host) merges the flushed intervals of
  this epoch, over all of the run's `devices`.
  """

  def __init__(self, devices: list[jax.Device]):
    self._devices = devices
    self._local_devices = distributed.local_devices(devices)
    self.on_device = self._empty_on_device()
    self.epoch_total = Metrics.empty()

  def _empty_on_device(self) -> Metrics:
    return jax_utils.replicate(Metrics.empty(), self._local_devices)

  def _all_devices(self) -> Metrics:
    """Every device's interval metrics on the host, all processes' included."""
    return distributed.gather_device_rows(jax.device_get(self.on_device),
                                          self._devices)

  def flush(self) -> dict[str, float]:
    """Returns the interval's loss and accuracy and starts a new interval."""
    interval = _reduce_over_devices(self._all_devices())
    self.on_device = self._empty_on_device()
    self.epoch_total = self.epoch_total.merge(interval)
    return {k: float(v) for k, v in interval.compute().items()}

  def flush_epoch(self) -> dict[str, float]:
    """Returns the whole epoch's loss and accuracy (call after `flush`)."""
    epoch = {k: float(v) for k, v in self.epoch_total.compute().items()}
    self.epoch_total = Metrics.empty()
    return epoch

  def snapshot(self) -> dict[str, Metrics]:
    return {'interval': self._all_devices(),
            'epoch': jax.device_get(self.epoch_total)}

  def restore(self, arrays: dict[str, Metrics]) -> None:
    sharding = jax.tree.leaves(self.on_device)[0].sharding
    rows = list(distributed.local_rows(self._devices))
    self.on_device = jax.device_put(
        jax.tree.map(lambda x: x[rows], arrays['interval']), sharding)
    self.epoch_total = arrays['epoch']


def _has_diverged(loss: float, reference_loss: float, factor: float) -> bool:
  return not math.isfinite(loss) or loss > factor * reference_loss


def write_sharpness(tracker: sharpness.Tracker, state: train_state.TrainState,
                    step: int, *, config: ml_collections.ConfigDict,
                    schedule: optax.Schedule,
                    writer: metric_writers.MetricWriter) -> sharpness.Eigen:
  """Measures the sharpness of replicated `state` and writes it at `step`.

  Beside it, `sharpness_limit`: the sharpness above which a quadratic would
  diverge at the rate of the coming step (2(1+mu)/lr for momentum, 2/lr for
  SGD; none for adaptive solvers). Training at the edge of stability keeps
  the sharpness near that limit.
  """
  eigen = tracker.measure(distributed.unreplicate(state.params))
  scalars = {'sharpness': eigen.value}
  factor = sharpness.stability_factor(config)
  if factor is not None:
    scalars['sharpness_limit'] = factor / float(schedule(step))
  writer.write_scalars(step, scalars)
  if not eigen.converged:
    logging.warning('Sharpness at step %d did not converge in %d products '
                    '(residual %.2g).', step, eigen.iterations,
                    eigen.residual)
  return eigen


def train_epoch(p_train_chunk: ChunkedTrainStep, state: train_state.TrainState,
                train_metrics: MetricsAccumulator,
                pipeline: input_pipeline.Pipeline, epoch: int, step: int, *,
                config: ml_collections.ConfigDict, schedule: optax.Schedule,
                writer: metric_writers.MetricWriter,
                reporter: periodic_actions.ReportProgress,
                reference_loss: float,
                stop_requested: Callable[[], bool] = lambda: False,
                sharpness_tracker: sharpness.Tracker | None = None):
  """Trains from global step `step` to the end of `epoch` (0-based).

  Runs `pipeline.train_chunks` through `p_train_chunk`, cut at the multiples
  of `config.log_every_steps`, where it writes the train scalars, as it does
  at the end of the epoch (which no chunk crosses), and with a
  `sharpness_tracker` at those of `config.sharpness_every_steps`, where it
  writes the sharpness (`write_sharpness`).

  Returns (state, step, interval, outcome): `interval` is the last written
  interval's loss and accuracy (None if none was written), `outcome`
  'epoch_end', 'diverged' (that interval's loss diverged) or 'stopped'
  (`stop_requested()` was true before a chunk; the state is then that of
  `step`, so a checkpoint of it resumes exactly).
  """
  epoch_start = epoch * pipeline.steps_per_epoch
  epoch_end = epoch_start + pipeline.steps_per_epoch
  interval = None
  periods = (config.log_every_steps,) + (
      (config.sharpness_every_steps,) if sharpness_tracker else ())
  for chunk in pipeline.train_chunks(epoch, start_step=step - epoch_start):
    for piece in _split_at_multiples(chunk, step, periods):
      if stop_requested():
        return state, step, interval, 'stopped'
      state, train_metrics.on_device = p_train_chunk(
          state, train_metrics.on_device, piece)
      step += input_pipeline.chunk_steps(piece)
      reporter(step)
      if sharpness_tracker and step % config.sharpness_every_steps == 0:
        write_sharpness(sharpness_tracker, state, step, config=config,
                        schedule=schedule, writer=writer)
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
        return state, step, interval, 'diverged'
  return state, step, interval, 'epoch_end'


def training_model(model: flax.linen.Module, devices: list[jax.Device],
                    per_device_batch: int) -> flax.linen.Module:
  """`model` with the lowering that trains fastest on `devices`.

  On CPU, for the models that have it (LeNets), convolutions as matrix
  products (`lettercnn.models.layers`): same parameters and results up to
  float rounding, several times faster at small batches. One image per
  device uses the NHWC 'matmul' lowering; larger batches train with the batch
  as the minor axis ('matmul_chwn'), whose patch matrices and products scale
  with it. Evaluation keeps XLA's convolutions, faster for its large batches.
  """
  if devices[0].platform != 'cpu':
    return model
  lowering = 'matmul' if per_device_batch == 1 else 'matmul_chwn'
  if lowering in model.lowerings:
    return model.clone(lowering=lowering)
  return model


def _final_status(final: dict[str, Any], config: ml_collections.ConfigDict,
                  num_classes: int) -> str:
  """converged, or not_converged when the final training accuracy is within
  `config.not_converged_margin_points` of chance."""
  chance_points = 100.0 / num_classes
  final_points = 100.0 * final['train_accuracy']
  if final_points - chance_points <= config.not_converged_margin_points:
    return run_status.NOT_CONVERGED
  return run_status.CONVERGED


def _is_new_best(best: dict[str, Any] | None, val_accuracy: float) -> bool:
  """Whether `val_accuracy` beats the run's best so far: the first epoch to
  reach the highest accuracy stays the best."""
  return best is None or val_accuracy > best['val_accuracy']


def _set_up(config: ml_collections.ConfigDict, devices: list[jax.Device]):
  """Builds the data, schedule and model, and the initial training state.

  Returns (pipeline, schedule, model, state, sharpness tracker or None).
  """
  logging.info('Training on %d %s device(s) in %d process(es), global batch '
               '%d.', len(devices), jax.default_backend(),
               jax.process_count(), config.batch_size)
  pipeline = input_pipeline.Pipeline(
      config, len(devices), input_pipeline.ProcessShare(
          distributed.local_rows(devices), jax.process_index(),
          jax.process_count()))
  logging.info('%d train / %d validation images, %d classes, %d steps/epoch.',
               pipeline.splits.num_train, pipeline.splits.num_validation,
               pipeline.splits.num_classes, pipeline.steps_per_epoch)
  schedule = schedules.create(config, pipeline.steps_per_epoch)
  model = models.create_model(config.model, pipeline.splits.num_classes)
  channels = 1 if config.grayscale else 3
  state = create_train_state(
      jax.random.key(config.seed),
      training_model(model, devices, config.batch_size // len(devices)),
      (config.image_size, config.image_size, channels),
      optimizers.create(config, schedule))
  tracker = None
  if config.sharpness_every_steps:
    examples = pipeline.first_train_examples(config.sharpness_examples)
    tracker = sharpness.Tracker(
        config, model.apply,
        sharpness.Subset(examples['image'], examples['label']), state.params)
  return pipeline, schedule, model, state, tracker


def _new_status(config: ml_collections.ConfigDict,
                pipeline: input_pipeline.Pipeline,
                num_devices: int) -> dict[str, Any]:
  return {
      'status': run_status.RUNNING, 'step': 0, 'epoch': 0.0,
      'num_epochs': config.num_epochs,
      'steps_per_epoch': pipeline.steps_per_epoch,
      'num_classes': pipeline.splits.num_classes, 'num_devices': num_devices,
      'final': None, 'best': None, 'wall_time_s': 0.0, 'params_sha256': None,
      'config': config.to_dict(),
  }


def _record_inputs(config: ml_collections.ConfigDict, workdir: str,
                   pipeline: input_pipeline.Pipeline,
                   status: dict[str, Any]) -> None:
  """Writes what classify needs to feed the model as training did, and
  records it in `status`: process 0's job, whose status alone is saved."""
  if not distributed.is_primary():
    return
  source = (run_inputs.FOLDER if input_pipeline.is_folder_dataset(
      config.dataset) else run_inputs.TFDS)
  status['inputs'] = run_inputs.record(
      workdir, config, pipeline.splits.class_names, source, pipeline.mean)


def _snapshot(step: int, status: dict[str, Any], state: TrainState,
              metrics: MetricsAccumulator) -> checkpointing.Snapshot:
  """The run at `step`, as a checkpoint holds it."""
  return checkpointing.Snapshot(step=step, meta=status, arrays={
      'state': distributed.unreplicate(jax.device_get(state)),
      'metrics': metrics.snapshot()})


def _initial_sharpness(tracker: sharpness.Tracker, state: TrainState, *,
                       config: ml_collections.ConfigDict,
                       schedule: optax.Schedule,
                       writer: metric_writers.MetricWriter) -> dict[str, Any]:
  """The sharpness at initialisation and the rate bound it gives."""
  eigen = write_sharpness(tracker, state, 0, config=config, schedule=schedule,
                          writer=writer)
  return {'lambda_max': eigen.value,
          'bound': sharpness.stable_rate_bound(config, eigen.value),
          'formula': sharpness.bound_formula(config)}


def _write_epoch(writer: metric_writers.MetricWriter, step: int, epoch: int,
                 num_epochs: int, train: dict[str, float],
                 val: dict[str, float]) -> None:
  """Writes and logs one epoch's training and validation metrics."""
  writer.write_scalars(step, {
      'epoch_train_loss': train['loss'],
      'epoch_train_accuracy': train['accuracy'],
      'val_loss': val['loss'],
      'val_accuracy': val['accuracy'],
  })
  writer.flush()
  logging.info('Epoch %d/%d: train loss %.4f acc %.4f, val loss %.4f acc '
               '%.4f', epoch + 1, num_epochs, train['loss'], train['accuracy'],
               val['loss'], val['accuracy'])


def _predict_labels(params, apply_fn: Callable[..., jax.Array],
                    images: jax.Array) -> jax.Array:
  return jnp.argmax(apply_fn({'params': params}, images), axis=-1)


_jit_predict_labels = jax.jit(_predict_labels, static_argnums=1)


def _validation_predictions(params, apply_fn: Callable[..., jax.Array],
                            pipeline: input_pipeline.Pipeline,
                            batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(true labels, predicted labels) of this process's validation batches."""
  labels, predicted = [], []
  for batch in pipeline.validation_batches(batch_size):
    mask = batch['mask']
    labels.append(batch['label'][mask])
    predicted.append(np.asarray(
        _jit_predict_labels(params, apply_fn, batch['image']))[mask])
  return np.concatenate(labels), np.concatenate(predicted)


def val_confusion(params, apply_fn: Callable[..., jax.Array],
                  pipeline: input_pipeline.Pipeline, batch_size: int,
                  step: int, writer: metric_writers.MetricWriter
                  ) -> dict[str, Any]:
  """The validation confusion matrix of `params`, as status.json records it.

  Written to TensorBoard as an image too; the counts of a multi-process
  run's processes are added up.
  """
  class_names = pipeline.splits.class_names
  counts = sum(distributed.gather_hosts(confusion.matrix(
      *_validation_predictions(params, apply_fn, pipeline, batch_size),
      len(class_names))))
  figure = confusion.confusion_figure(
      counts, class_names, f'Validation split at step {step}')
  writer.write_images(step, {
      'val_confusion_matrix': confusion.as_image(figure)[np.newaxis]})
  logging.info('Most confused on the validation split: %s.', '; '.join(
      p.describe() for p in confusion.most_confused(counts, class_names))
               or 'nothing')
  return confusion.record(counts, class_names, step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       until_epoch: int | None = None) -> dict[str, Any]:
  """Trains `config` into `workdir`, resuming what is there; returns its status.

  With `until_epoch` it stops once that epoch is trained and checkpointed,
  its status left `running`, so that a later call continues it: the schedule
  stays the full run's, and the trajectory is the full run's, bit for bit.

  The config must have passed `config_checks.check_config` and the caller
  must hold the workdir (`run.workdir.claimed`), as `lettercnn.main` does.
  Raises `signals.Preempted` after saving a checkpoint on SIGTERM/SIGINT. In
  a multi-process run every process calls it.
  """
  devices = distributed.run_devices(config_checks.num_devices_to_use(config))
  pipeline, schedule, model, state, tracker = distributed.agreed(
      lambda: _set_up(config, devices))
  steps_per_epoch = pipeline.steps_per_epoch
  checkpointer = checkpointing.Checkpointer(workdir)
  try:
    # Restore the newest intact checkpoint, or start a new run at step 0.
    metrics = MetricsAccumulator(devices)
    snapshot = checkpointer.restore_latest(
        {'state': state, 'metrics': metrics.snapshot()})
    if snapshot is None:
      step, status = 0, _new_status(config, pipeline, len(devices))
    else:
      step, status, state = (snapshot.step, snapshot.meta,
                             snapshot.arrays['state'])
      metrics.restore(snapshot.arrays['metrics'])
      logging.info('Resuming from the checkpoint at step %d.', step)
    events.resume_at(workdir, None if snapshot is None else step)
    state = jax_utils.replicate(state, distributed.local_devices(devices))
    started = time.monotonic() - status['wall_time_s']
    _record_inputs(config, workdir, pipeline, status)
    # A run that could not save would lose its training: refuse it now.
    first = _snapshot(step, status, state, metrics)
    distributed.agreed(lambda: checkpointer.check_space(step, first.arrays))
    writer = metric_writers.create_default_writer(
        workdir, just_logging=not distributed.is_primary())
    if step == 0:
      writer.write_hparams(events.hparams(config))
    run_status.save(workdir, status)

    p_train_chunk = ChunkedTrainStep(devices, pipeline.steps_per_chunk)
    reporter = periodic_actions.ReportProgress(
        num_train_steps=config.num_epochs * steps_per_epoch, every_secs=30)
    if tracker and step == 0:
      status['initial_sharpness'] = _initial_sharpness(
          tracker, state, config=config, schedule=schedule, writer=writer)
    last_epoch = min(config.num_epochs, until_epoch or config.num_epochs)
    with signals.StopSignals(devices) as stop:
      for epoch in range(step // steps_per_epoch, last_epoch):
        state, step, interval, outcome = train_epoch(
            p_train_chunk, state, metrics, pipeline, epoch, step,
            config=config, schedule=schedule, writer=writer,
            reporter=reporter,
            reference_loss=math.log(pipeline.splits.num_classes),
            stop_requested=stop.requested, sharpness_tracker=tracker)
        status.update(step=step, epoch=step / steps_per_epoch)
        if outcome == 'stopped':
          status['wall_time_s'] = time.monotonic() - started
          checkpointer.save(_snapshot(step, status, state, metrics))
          run_status.save(workdir, status)
          writer.flush()
          raise signals.Preempted(stop.signum, step)
        params = distributed.unreplicate(state.params)
        status['params_sha256'] = checkpointing.array_digest(params)
        if outcome == 'diverged':
          status['status'] = run_status.DIVERGED
          status['final'] = {'train_loss': interval['loss'],
                             'train_accuracy': interval['accuracy'],
                             'val_loss': None, 'val_accuracy': None}
          break

        train = metrics.flush_epoch()
        val = evaluate(params, model.apply, pipeline, config.eval_batch_size)
        _write_epoch(writer, step, epoch, config.num_epochs, train, val)
        status['final'] = {'train_loss': train['loss'],
                           'train_accuracy': train['accuracy'],
                           'val_loss': val['loss'],
                           'val_accuracy': val['accuracy']}
        status['wall_time_s'] = time.monotonic() - started
        # The best first: killed between the two saves, the run resumes
        # from an earlier checkpoint and trains this epoch again, to the
        # same state, and never names a best checkpoint that was not saved.
        # The first epoch to reach the highest accuracy is the best.
        if _is_new_best(status['best'], val['accuracy']):
          status['best'] = {'val_accuracy': val['accuracy'],
                            'epoch': epoch + 1, 'step': step}
          checkpointer.save_best(_snapshot(step, status, state, metrics))
        if ((epoch + 1) % config.checkpoint_every_epochs == 0
            or epoch + 1 == last_epoch):
          checkpointer.save(_snapshot(step, status, state, metrics))
        run_status.save(workdir, status)
      else:
        if step < config.num_epochs * steps_per_epoch:
          # Stopped at `until_epoch`: the checkpoint above holds it.
          writer.close()
          logging.info('Stopped at epoch %d of %d, as asked.',
                       step // steps_per_epoch, config.num_epochs)
          return status
        status['status'] = _final_status(status['final'], config,
                                         pipeline.splits.num_classes)

    if status['status'] != run_status.DIVERGED:
      status['val_confusion'] = val_confusion(
          distributed.unreplicate(state.params), model.apply, pipeline,
          config.eval_batch_size, step, writer)
    # The status that marks the run finished is written last, once the
    # events it vouches for are on disk: a finished run is never rerun.
    writer.close()
    status['wall_time_s'] = time.monotonic() - started
    run_status.save(workdir, status)
  finally:
    checkpointer.close()
  logging.info('Run %s in %.0f s.', run_status.describe(status),
               status['wall_time_s'])
  return status
