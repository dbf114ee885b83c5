"""Training loop: pmap-ed train steps, per-epoch evaluation, TensorBoard.

Data flows one way: config -> input pipeline -> train loop -> writers -> status.
"""

import dataclasses
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
import numpy as np
import optax

from lettercnn.run import checkpoints as checkpointing
from lettercnn import config_checks
from lettercnn import confusion
from lettercnn import confusion_plots
from lettercnn import distributed
from lettercnn.sweep import hparams as hparams_summary
from lettercnn.data import input_pipeline
from lettercnn.models import networks as models
from lettercnn import optimizers
from lettercnn.run import progress
from lettercnn.run import inputs as run_inputs
from lettercnn.run import status as run_status
from lettercnn import schedules
from lettercnn.lr_find import sharpness
from lettercnn.run import events as tb_events
from lettercnn.run import workdir as workdir_guard


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
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
  parameters', which flax draws from `rng` itself (as before dropout, so a
  seed keeps its initial parameters).
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


def train_step(state: TrainState, train_metrics: TrainMetrics,
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
  train_metrics = train_metrics.merge(TrainMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch['label']))
  return state, train_metrics


def train_chunk(state: train_state.TrainState, train_metrics: TrainMetrics,
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
              batch: dict[str, jax.Array]) -> EvalMetrics:
  """Metrics of one padded validation batch; padding is masked out."""
  losses, logits = _loss_and_logits(params, apply_fn, batch)
  return EvalMetrics.single_from_model_output(
      loss=losses, logits=logits, labels=batch['label'], mask=batch['mask'])


_jit_eval_step = jax.jit(eval_step, static_argnums=1)


def evaluate(params, apply_fn: Callable[..., jax.Array],
             pipeline: input_pipeline.Pipeline,
             batch_size: int) -> dict[str, float]:
  """Loss and accuracy over the whole validation split, each example once.

  In a multi-process run each process evaluates its share of the batches,
  and the sums are merged over the processes.
  """
  totals = EvalMetrics.empty()
  for batch in pipeline.validation_batches(batch_size):
    totals = totals.merge(_jit_eval_step(params, apply_fn, batch))
  # Merged as JAX arrays, as one process's are: float32, not numpy's float64.
  totals = functools.reduce(EvalMetrics.merge, [
      jax.tree.map(jnp.asarray, part)
      for part in distributed.gather_hosts(totals)])
  return {k: float(v) for k, v in totals.compute().items()}


# clu's `Metric.reduce` runs a `lax.scan`, which, called eagerly, is traced and
# compiled anew at every call (~50 ms: a sixth of a 500-step interval at batch
# size 1); jitted, it compiles once.
_reduce_over_devices = jax.jit(lambda metrics: metrics.reduce())


class _TrainMetricsAccumulator:
  """Train metrics summed on device, read (one host sync) when flushed.

  `on_device` holds one collection per device of this process since the
  last flush; `epoch_total` (on the host) merges the flushed intervals of
  this epoch, over all of the run's `devices`.
  """

  def __init__(self, devices: list[jax.Device]):
    self._devices = devices
    self._local_devices = distributed.local_devices(devices)
    self.on_device = self._empty_on_device()
    self.epoch_total = TrainMetrics.empty()

  def _empty_on_device(self) -> TrainMetrics:
    return jax_utils.replicate(TrainMetrics.empty(), self._local_devices)

  def _all_devices(self) -> TrainMetrics:
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
    self.epoch_total = TrainMetrics.empty()
    return epoch

  def snapshot(self) -> dict[str, TrainMetrics]:
    return {'interval': self._all_devices(),
            'epoch': jax.device_get(self.epoch_total)}

  def restore(self, arrays: dict[str, TrainMetrics]) -> None:
    sharding = jax.tree.leaves(self.on_device)[0].sharding
    rows = list(distributed.local_rows(self._devices))
    self.on_device = jax.device_put(
        jax.tree.map(lambda x: x[rows], arrays['interval']), sharding)
    self.epoch_total = arrays['epoch']


class Preempted(Exception):
  """SIGTERM or SIGINT arrived; the run saved a checkpoint and must exit."""

  def __init__(self, signum: int, step: int):
    super().__init__(
        f'stopped by signal {signum} at step {step}; checkpoint saved')
    self.exit_code = 128 + signum


class _StopSignals:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps.

  In a multi-process run the processes vote at each check, so that all stop
  at the same step when any of them got a signal.
  """

  def __init__(self, devices: list[jax.Device]):
    self.signum = None
    self._previous = {}
    self._vote = (distributed.StopVote(devices) if jax.process_count() > 1
                  else None)

  def requested(self) -> bool:
    """Whether to stop now (a collective in a multi-process run)."""
    if self._vote is not None:
      self.signum = self._vote(self.signum or 0) or None
    return self.signum is not None

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
  """The config as TensorBoard hparams (scalars and strings; None as 'None')."""
  return {k: hparams_summary.logged_value(v) for k, v in config.items()}


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
                train_metrics: _TrainMetricsAccumulator,
                pipeline: input_pipeline.Pipeline, epoch: int, step: int, *,
                config: ml_collections.ConfigDict, schedule: optax.Schedule,
                writer: metric_writers.MetricWriter,
                reporter: progress.ProgressLogger, reference_loss: float,
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
      reporter.maybe_log(step)
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
  products (`lettercnn.models.layers`): same parameters and results up to float
  rounding, several times faster at small batches. One image per device
  keeps the NHWC 'matmul' lowering (which batch-1 runs were made with, so
  they stay bit-identical); larger batches train with the batch as the minor
  axis ('matmul_chwn'), whose patch matrices and products scale with it.
  Evaluation keeps XLA's convolutions, faster for its large batches.
  """
  if devices[0].platform != 'cpu':
    return model
  lowering = 'matmul' if per_device_batch == 1 else 'matmul_chwn'
  if lowering in model.lowerings:
    return model.clone(lowering=lowering)
  return model


def _final_status(status: dict[str, Any], config: ml_collections.ConfigDict,
                  num_classes: int) -> str:
  chance_points = 100.0 / num_classes
  final_points = 100.0 * status['final']['train_accuracy']
  if final_points - chance_points <= config.not_converged_margin_points:
    return run_status.NOT_CONVERGED
  return run_status.CONVERGED


@dataclasses.dataclass(frozen=True)
class _Setup:
  """What a run is built from: fixed once the data and model exist."""
  config: ml_collections.ConfigDict
  workdir: str
  devices: list[jax.Device]
  pipeline: input_pipeline.Pipeline
  schedule: optax.Schedule
  eval_apply_fn: Callable[..., jax.Array]
  checkpointer: checkpointing.Checkpointer
  # Measures the sharpness every config.sharpness_every_steps (None: off).
  sharpness_tracker: sharpness.Tracker | None

  @property
  def steps_per_epoch(self) -> int:
    return self.pipeline.steps_per_epoch

  @property
  def num_classes(self) -> int:
    return self.pipeline.splits.num_classes


@dataclasses.dataclass
class _Run:
  """Where a run stands; the epoch loop advances it.

  `state` is replicated over the devices once training starts; `status` is
  what status.json and every checkpoint record; `wall_time_before_s` is the
  training time of earlier processes, `started` this process's start.
  """
  state: train_state.TrainState
  metrics: _TrainMetricsAccumulator
  step: int
  status: dict[str, Any]
  wall_time_before_s: float
  started: float

  def record_wall_time(self) -> None:
    self.status['wall_time_s'] = (self.wall_time_before_s + time.monotonic()
                                  - self.started)


def _set_up(config: ml_collections.ConfigDict, workdir: str,
            num_devices: int) -> tuple[_Setup, train_state.TrainState]:
  """Builds the data, schedule and model; returns them and the initial state."""
  devices = distributed.run_devices(num_devices)
  logging.info('Training on %d %s device(s) in %d process(es), global batch '
               '%d.', num_devices, jax.default_backend(),
               jax.process_count(), config.batch_size)
  pipeline = input_pipeline.Pipeline(
      config, num_devices, input_pipeline.ProcessShare(
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
      training_model(model, devices, config.batch_size // num_devices),
      (config.image_size, config.image_size, channels),
      optimizers.create(config, schedule))
  tracker = None
  if config.sharpness_every_steps:
    examples = pipeline.first_train_examples(config.sharpness_examples)
    tracker = sharpness.Tracker(
        config, model.apply,
        sharpness.Subset(examples['image'], examples['label']), state.params)
  setup = _Setup(config=config, workdir=workdir, devices=devices,
                 pipeline=pipeline, schedule=schedule,
                 eval_apply_fn=model.apply,
                 checkpointer=checkpointing.Checkpointer(workdir),
                 sharpness_tracker=tracker)
  return setup, state


def _new_status(setup: _Setup) -> dict[str, Any]:
  return {
      'status': run_status.RUNNING, 'step': 0, 'epoch': 0.0,
      'num_epochs': setup.config.num_epochs,
      'steps_per_epoch': setup.steps_per_epoch,
      'num_classes': setup.num_classes, 'num_devices': len(setup.devices),
      'final': None, 'best': None, 'wall_time_s': 0.0, 'params_sha256': None,
      'config': setup.config.to_dict(),
  }


def _restore(setup: _Setup, state: train_state.TrainState) -> _Run:
  """The run from its newest intact checkpoint, or a new one at step 0.

  TensorBoard events are trimmed back to the restored step, so every step
  shows once; a run that restores nothing sets earlier events aside.
  """
  metrics = _TrainMetricsAccumulator(setup.devices)
  snapshot = setup.checkpointer.restore_latest(
      {'state': state, 'metrics': metrics.snapshot()})
  primary = distributed.is_primary()
  if snapshot is None:
    if primary:
      tb_events.set_aside_events(setup.workdir)
    status, step = _new_status(setup), 0
  else:
    state, status, step = (snapshot.arrays['state'], snapshot.meta,
                           snapshot.step)
    metrics.restore(snapshot.arrays['metrics'])
    logging.info('Resuming from the checkpoint at step %d.', step)
    if primary:
      tb_events.drop_events_after(setup.workdir, step)
  return _Run(state=jax_utils.replicate(
      state, distributed.local_devices(setup.devices)), metrics=metrics,
              step=step, status=status,
              wall_time_before_s=status['wall_time_s'],
              started=time.monotonic())


def _checkpoint_arrays(run: _Run) -> dict[str, Any]:
  return {'state': distributed.unreplicate(jax.device_get(run.state)),
          'metrics': run.metrics.snapshot()}


def _save_checkpoint(setup: _Setup, run: _Run, best: bool = False) -> None:
  """Saves the run where it stands: a latest checkpoint, or the best one."""
  run.record_wall_time()
  snapshot = checkpointing.Snapshot(step=run.step, meta=run.status,
                                    arrays=_checkpoint_arrays(run))
  if best:
    setup.checkpointer.save_best(snapshot)
  else:
    setup.checkpointer.save(snapshot)


def _end_epoch(setup: _Setup, run: _Run, epoch: int,
               writer: metric_writers.MetricWriter) -> bool:
  """Evaluates after `epoch` (0-based) and records it in run.status.

  Returns whether its validation accuracy is the run's best so far (the
  first epoch to reach the highest is the best).
  """
  config, status = setup.config, run.status
  params = distributed.unreplicate(run.state.params)
  epoch_train = run.metrics.flush_epoch()
  val = evaluate(params, setup.eval_apply_fn, setup.pipeline,
                 config.eval_batch_size)
  writer.write_scalars(run.step, {
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
                     'val_loss': val['loss'], 'val_accuracy': val['accuracy']}
  if status['best'] is None or val['accuracy'] > status['best']['val_accuracy']:
    status['best'] = {'val_accuracy': val['accuracy'], 'epoch': epoch + 1,
                      'step': run.step}
    return True
  return False


def _train_epochs(setup: _Setup, run: _Run,
                  writer: metric_writers.MetricWriter) -> None:
  """Trains from run.step to the end, or until the loss diverges.

  Raises:
    Preempted: SIGTERM or SIGINT arrived; the step reached is checkpointed.
  """
  config, status = setup.config, run.status
  p_train_chunk = ChunkedTrainStep(setup.devices,
                                   setup.pipeline.steps_per_chunk)
  # An untrained network predicts about uniformly: cross-entropy ln(classes).
  reference_loss = math.log(setup.num_classes)
  reporter = progress.ProgressLogger(
      config.num_epochs * setup.steps_per_epoch, config.batch_size,
      setup.steps_per_epoch, start_step=run.step)
  if setup.sharpness_tracker and run.step == 0:
    eigen = write_sharpness(setup.sharpness_tracker, run.state, 0,
                            config=config, schedule=setup.schedule,
                            writer=writer)
    status['initial_sharpness'] = {
        'lambda_max': eigen.value,
        'bound': sharpness.stable_rate_bound(config, eigen.value),
        'formula': sharpness.bound_formula(config)}
  with _StopSignals(setup.devices) as stop:
    for epoch in range(run.step // setup.steps_per_epoch, config.num_epochs):
      run.state, run.step, interval, outcome = train_epoch(
          p_train_chunk, run.state, run.metrics, setup.pipeline, epoch,
          run.step, config=config, schedule=setup.schedule, writer=writer,
          reporter=reporter, reference_loss=reference_loss,
          stop_requested=stop.requested,
          sharpness_tracker=setup.sharpness_tracker)
      status['step'] = run.step
      status['epoch'] = run.step / setup.steps_per_epoch
      if outcome == 'stopped':
        _save_checkpoint(setup, run)
        _write_status(setup.workdir, status)
        writer.flush()
        raise Preempted(stop.signum, run.step)
      status['params_sha256'] = checkpointing.array_digest(
          distributed.unreplicate(run.state.params))
      if outcome == 'diverged':
        status['status'] = run_status.DIVERGED
        status['final'] = {'train_loss': interval['loss'],
                           'train_accuracy': interval['accuracy'],
                           'val_loss': None, 'val_accuracy': None}
        return
      # The best first. Killed between the two saves, the run resumes from
      # an earlier checkpoint and trains this epoch again, to the same state;
      # in the other order it would resume with a best epoch in its status
      # whose checkpoint was never written.
      if _end_epoch(setup, run, epoch, writer):
        _save_checkpoint(setup, run, best=True)
      if ((epoch + 1) % config.checkpoint_every_epochs == 0
          or epoch + 1 == config.num_epochs):
        _save_checkpoint(setup, run)
      _write_status(setup.workdir, status)
  status['status'] = _final_status(status, config, setup.num_classes)


def _write_status(workdir: str, status: dict[str, Any]) -> None:
  """Writes status.json: process 0's job in a multi-process run."""
  if distributed.is_primary():
    run_status.write(workdir, status)


def _record_inputs(setup: _Setup, run: _Run) -> None:
  """Writes what classify needs to feed the model as training did.

  Process 0's job in a multi-process run, whose status it alone saves.
  """
  if not distributed.is_primary():
    return
  source = (run_inputs.FOLDER
            if input_pipeline.is_folder_dataset(setup.config.dataset)
            else run_inputs.TFDS)
  run.status['inputs'] = run_inputs.record(
      setup.workdir, setup.config, setup.pipeline.splits.class_names, source,
      setup.pipeline.mean)


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


def _record_val_confusion(setup: _Setup, run: _Run,
                          writer: metric_writers.MetricWriter) -> None:
  """Records the final parameters' validation confusion matrix.

  In status.json, with per-class accuracy, and in TensorBoard as an image;
  the counts of a multi-process run's processes are added up.
  """
  class_names = setup.pipeline.splits.class_names
  counts = sum(distributed.gather_hosts(confusion.matrix(
      *_validation_predictions(
          distributed.unreplicate(run.state.params), setup.eval_apply_fn,
          setup.pipeline, setup.config.eval_batch_size), setup.num_classes)))
  run.status['val_confusion'] = confusion.record(counts, class_names,
                                                 run.step)
  figure = confusion_plots.confusion_figure(
      counts, class_names, f'Validation split at step {run.step}')
  writer.write_images(run.step, {
      'val_confusion_matrix': confusion_plots.as_image(figure)[np.newaxis]})
  logging.info('Most confused on the validation split: %s.', '; '.join(
      p.describe() for p in confusion.most_confused(counts, class_names))
               or 'nothing')


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains `config` into `workdir`, resuming what is there; returns its status.

  Holds the workdir's lock throughout. Raises InputError for a bad config, a
  busy workdir or one of another run before any data is built, and
  Preempted after saving a checkpoint on SIGTERM/SIGINT. In a multi-process
  run every process calls it, and all raise any one's InputError.
  """
  num_devices = config_checks.check_config(config)
  with workdir_guard.claimed(config, workdir, num_devices) as status:
    if status is not None and status['status'] in run_status.FINISHED:
      logging.info('Run in %s already finished: %s.', workdir,
                   run_status.describe(status))
      return status
    setup, initial_state = distributed.agreed(
        lambda: _set_up(config, workdir, num_devices))
    try:
      run = _restore(setup, initial_state)
      _record_inputs(setup, run)
      # A run that could not save would lose its training: refuse it now.
      arrays = _checkpoint_arrays(run)
      distributed.agreed(
          lambda: setup.checkpointer.check_space(run.step, arrays))
      writer = metric_writers.create_default_writer(
          workdir, just_logging=not distributed.is_primary())
      if run.step == 0:
        writer.write_hparams(_hparams(config))
      _write_status(workdir, run.status)
      _train_epochs(setup, run, writer)
      if run.status['status'] != run_status.DIVERGED:
        _record_val_confusion(setup, run, writer)
      run.record_wall_time()
      _write_status(workdir, run.status)
      writer.close()
    finally:
      setup.checkpointer.close()
  logging.info('Run %s in %.0f s.', run_status.describe(run.status),
               run.status['wall_time_s'])
  return run.status
