"""Training speed of lettercnn against PyTorch eager, side by side on one CPU.

Trains DIGITS' LeNet (the same network, input size, SGD-momentum update with
weight decay and data) at batch sizes 1 (the study's setting), 8, 32 and 128,
and prints, in images per second, the median over --repeats of:

  * lettercnn loop: the real training loop of lettercnn/train.py (input
    pipeline, on-device metrics, interval flushes every log_every_steps,
    TensorBoard writer, progress logger, learning-rate schedule), one or more
    whole epochs of a small generated tombstone_letters dataset, without
    evaluation or checkpoints; on CPU over the host devices main trains on
    (`lettercnn.cpu_devices`: two at batch 128, one below);
  * bare step: the compiled step function that loop calls, fed from arrays
    already on the device, with nothing else around it: the loop's ceiling;
  * jit step: one plain `jax.jit` training step per call (the project's model
    with XLA's convolutions and optimizer, no pmap, no metrics): a reference;
  * PyTorch eager: a plain PyTorch training loop of the same network on the
    same images in memory, with as many threads as XLA uses (all the cores
    this process may run on), and with 1 thread (shown apart: on a loaded
    machine OpenMP's spinning threads can be much slower than one).

The contenders take turns within every repeat (in a rotating order), so a
change in machine load hits them all alike; compare the ratios. Also printed:
the ratios, the projected wall time of the full default sweep (7 learning
rates x 30 epochs x 5250 steps at batch 1) at the loop's batch-1 rate, the
FLOPs of one training image (counted from the layer shapes, and XLA's own
count) and the fraction of the CPU's peak each contender reaches, and, at
each batch size, an epoch's time split into training steps, waiting for the
input pipeline and evaluation (--nosplit skips it).

Run from the repository root (torch: `pip install -r requirements-bench.txt`):

  python scripts/benchmark.py [--repeats=5] [--steps=1500] [--images=3000]
      [--batch_sizes=1,8,32,128] [--out=FILE.json]

The dataset is generated once into --data_dir (default
/tmp/lettercnn_benchmark_data, about 20 s). The default run took seven to
nine minutes on two loaded cores (a PyTorch run stops after --max_seconds).
`--only=loop,bare --batch_sizes=1 --notorch` is a one-minute check of the
loop against its ceiling; `--threads=1` pins everything to one core.
"""

import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from clu import metric_writers
from clu import periodic_actions
from flax import jax_utils
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import default
from lettercnn import cpu_devices
from lettercnn import distributed
from lettercnn.data import input_pipeline
from lettercnn.models import networks as models
from lettercnn.optim import optimizers
from lettercnn.optim import schedules
from lettercnn import train
# pylint: enable=g-import-not-at-top,wrong-import-position

_THREADS = flags.DEFINE_integer(
    'threads', 0, 'Cores to run on (0: all this process may use). The process '
    'is pinned to them before JAX starts, so XLA:CPU sizes its thread pool to '
    'them, and PyTorch gets as many threads.')
_REPEATS = flags.DEFINE_integer(
    'repeats', 5, 'Timed runs of every contender; medians are reported.')
_STEPS = flags.DEFINE_integer(
    'steps', 1500, 'Batch-1 steps per timed run (the loop runs whole epochs: '
    'the number of epochs closest to this).')
_IMAGES = flags.DEFINE_integer(
    'images', 3000, 'Images per timed run at batch sizes above 1 (whole '
    'epochs, as --steps).')
_EXAMPLES_PER_CLASS = flags.DEFINE_integer(
    'examples_per_class', 200,
    'Images per letter of the generated dataset (200: 1500 training images).')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', '/tmp/lettercnn_benchmark_data',
    'TFDS data dir the dataset is built into once.')
_MAX_SECONDS = flags.DEFINE_float(
    'max_seconds', 3.0, 'A PyTorch or jit-step run stops after this long even '
    'if it has not done its steps (a slow contender must not eat the time).')
_TORCH = flags.DEFINE_bool('torch', True, 'Measure PyTorch eager too.')
_ONLY = flags.DEFINE_list(
    'only', None, 'Measure only these contenders (loop, bare, jit, torch, '
    'torch1); the default is all.')
_BATCH_SIZES = flags.DEFINE_list(
    'batch_sizes', ['1', '8', '32', '128'], 'Batch sizes to measure.')
_SPLIT = flags.DEFINE_bool(
    'split', True, 'Also time an epoch\'s parts at each batch size: the '
    'training steps, the wait for the input pipeline, and evaluation.')
_OUT = flags.DEFINE_string('out', None, 'Also write the results as JSON here.')

# The full default sweep: 7 learning rates x 30 epochs x 5250 steps.
SWEEP_STEPS = 7 * 30 * 5250
BATCH_SIZES = (1, 8, 32, 128)
_ROW_NAMES = {'loop': 'lettercnn loop', 'bare': 'bare step',
              'jit': 'jit step', 'torch': 'torch', 'torch1': 'torch 1 thread'}
# Number of distinct device-resident inputs the bare and jit steps cycle over.
_DEVICE_INPUTS = 8


# --------------------------------------------------------------------------
# The CPU: threads, peak FLOP/s.


def xla_threads() -> int:
  """Threads XLA:CPU computes with: one per core this process may run on."""
  return len(os.sched_getaffinity(0))


def _cpuinfo() -> dict[str, str]:
  info = {}
  with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
    for line in f:
      if ':' in line:
        key, value = (s.strip() for s in line.split(':', 1))
        info.setdefault(key, value)
  return info


def cpu_peak() -> dict[str, Any]:
  """Estimated fp32 peak: cores x clock x FLOPs per cycle of the vector ISA."""
  info = _cpuinfo()
  cpu_flags = set(info.get('flags', '').split())
  vendor = info.get('vendor_id', '')
  family = int(info.get('cpu family', '0') or 0)
  ghz = float(info.get('cpu MHz', '0') or 0) / 1000
  if 'avx512f' in cpu_flags:
    if vendor == 'AuthenticAMD' and family < 26:
      isa, flops_per_cycle = ('AVX-512 FMA on Zen 4: 512-bit ops run as two '
                              '256-bit halves on 2 FMA pipes = 2 x 8 lanes x '
                              '2', 32)
    else:
      isa, flops_per_cycle = 'AVX-512 FMA, 2 units: 2 x 16 lanes x 2', 64
  elif 'avx2' in cpu_flags and 'fma' in cpu_flags:
    isa, flops_per_cycle = 'AVX2 FMA, 2 units: 2 x 8 lanes x 2', 32
  else:
    isa, flops_per_cycle = 'SSE: 2 x 4 lanes (add + mul)', 8
  cores = xla_threads()
  return {'model': info.get('model name', platform.processor()),
          'cores': cores, 'ghz': ghz, 'isa': isa,
          'flops_per_cycle_per_core': flops_per_cycle,
          'peak_flops': cores * ghz * 1e9 * flops_per_cycle}


def lenet_train_flops(image_size: int = 28, num_classes: int = 10) -> float:
  """FLOPs to train on one image: 2 x forward MACs x 3, less conv1's dx."""
  conv1_out = image_size - 4
  conv2_in = conv1_out // 2
  conv2_out = conv2_in - 4
  flat = (conv2_out // 2) ** 2 * 50
  conv1 = conv1_out ** 2 * 20 * 25 * 1
  conv2 = conv2_out ** 2 * 50 * 25 * 20
  forward_macs = conv1 + conv2 + flat * 500 + 500 * num_classes
  # Backward: gradients of weights and of inputs (2x forward), except the
  # input gradient of conv1, whose input is data.
  return 2 * (3 * forward_macs - conv1)


def _xla_flops(fn, *args) -> float | None:
  try:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float(cost.get('flops', 0.0)) or None


# --------------------------------------------------------------------------
# lettercnn: the real loop, its bare step, a plain jit step.


def _config(batch_size: int):
  config = default.get_config()
  config.examples_per_class = _EXAMPLES_PER_CLASS.value
  config.data_dir = _DATA_DIR.value
  config.batch_size = batch_size
  return config


def _initial_state(config, num_classes: int, devices, schedule):
  model = models.create_model(config.model, num_classes)
  model = train.training_model(model, devices,
                               config.batch_size // len(devices))
  return train.create_train_state(
      jax.random.key(config.seed), model,
      (config.image_size, config.image_size, 1),
      optimizers.create(config, schedule))


class LettercnnLoop:
  """The real train loop at one batch size: state kept across timed runs."""

  def __init__(self, batch_size: int, target_steps: int, workdir: str):
    self.config = _config(batch_size)
    self.devices = jax.local_devices()
    if jax.default_backend() == 'cpu':  # The devices main would train on.
      self.devices = self.devices[:cpu_devices.count_for(
          batch_size, self.config.cpu_devices)]
    self.pipeline = input_pipeline.Pipeline(self.config, len(self.devices))
    self.steps_per_epoch = self.pipeline.steps_per_epoch
    self.epochs_per_run = max(1, round(target_steps / self.steps_per_epoch))
    self.schedule = schedules.create(
        self.config, self.steps_per_epoch)
    self.state = jax_utils.replicate(
        _initial_state(self.config, self.pipeline.splits.num_classes,
                       self.devices, self.schedule), self.devices)
    self.metrics = train.MetricsAccumulator(self.devices)  # pylint: disable=protected-access
    self.writer = metric_writers.create_default_writer(
        os.path.join(workdir, f'batch{batch_size}'))
    self.reporter = periodic_actions.ReportProgress(
        num_train_steps=self.config.num_epochs * self.steps_per_epoch,
        every_secs=30)
    self.reference_loss = math.log(self.pipeline.splits.num_classes)
    self.epoch = 0
    self.step = 0
    self.p_step = train.ChunkedTrainStep(self.devices,
                                         self.pipeline.steps_per_chunk)

  @property
  def steps_per_run(self) -> int:
    return self.epochs_per_run * self.steps_per_epoch

  def run(self) -> int:
    """Trains `epochs_per_run` epochs; returns the steps taken."""
    start = self.step
    for _ in range(self.epochs_per_run):
      self.state, self.step, _, outcome = train.train_epoch(
          self.p_step, self.state, self.metrics, self.pipeline, self.epoch,
          self.step, config=self.config, schedule=self.schedule,
          writer=self.writer, reporter=self.reporter,
          reference_loss=self.reference_loss)
      assert outcome == 'epoch_end', outcome
      self.metrics.flush_epoch()
      self.epoch += 1
    jax.block_until_ready(self.state)
    return self.step - start

  def epoch_split(self, repeats: int) -> dict[str, float]:
    """Medians of an epoch's parts, in seconds: the steps, the wait for input.

    One training epoch (`train.train_epoch`, timing every wait for the next
    chunk of `Pipeline.train_chunks`) and one validation pass
    (`train.evaluate` at the config's eval_batch_size, with XLA's
    convolutions, as train_and_evaluate runs it), after a warm-up of each.
    """
    pipeline = self.pipeline
    original = pipeline.train_chunks
    waits = []

    def timed_chunks(*args, **kwargs):
      chunks = original(*args, **kwargs)
      while True:
        start = time.perf_counter()
        chunk = next(chunks, None)
        waits.append(time.perf_counter() - start)
        if chunk is None:
          return
        yield chunk

    eval_apply_fn = models.create_model(
        self.config.model, pipeline.splits.num_classes).apply
    samples = {'train_epoch_s': [], 'input_wait_s': [], 'evaluation_s': []}
    pipeline.train_chunks = timed_chunks
    try:
      for repeat in range(repeats + 1):  # The first is a warm-up.
        waits.clear()
        start = time.perf_counter()
        self.state, self.step, _, _ = train.train_epoch(
            self.p_step, self.state, self.metrics, pipeline, self.epoch,
            self.step, config=self.config, schedule=self.schedule,
            writer=self.writer, reporter=self.reporter,
            reference_loss=self.reference_loss)
        jax.block_until_ready(self.state)
        epoch_s = time.perf_counter() - start
        self.metrics.flush_epoch()
        self.epoch += 1
        start = time.perf_counter()
        train.evaluate(distributed.unreplicate(self.state.params),
                       eval_apply_fn, pipeline, self.config.eval_batch_size)
        evaluation_s = time.perf_counter() - start
        if repeat:
          samples['train_epoch_s'].append(epoch_s)
          samples['input_wait_s'].append(sum(waits))
          samples['evaluation_s'].append(evaluation_s)
    finally:
      del pipeline.train_chunks  # The class's method again.
    split = {k: statistics.median(v) for k, v in samples.items()}
    split['steps_s'] = split['train_epoch_s'] - split['input_wait_s']
    return split

  def bare_step(self) -> 'BareStep':
    return BareStep(self)

  def numpy_images(self) -> tuple[np.ndarray, np.ndarray]:
    """The training images (N, H, W, 1) and labels, in epoch 0's order."""
    images, labels = [], []
    for batch in self.pipeline.train_batches(0):
      images.append(batch['image'].reshape((-1,) + batch['image'].shape[-3:]))
      labels.append(batch['label'].reshape(-1))
    return np.concatenate(images), np.concatenate(labels)


def _on_devices(tree, devices):
  mesh = jax.sharding.Mesh(np.array(devices), ('devices',))
  sharding = jax.NamedSharding(mesh, jax.P('devices'))
  return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


class BareStep:
  """The loop's own compiled step on device-resident inputs, back to back."""

  def __init__(self, loop: LettercnnLoop):
    self.loop = loop
    images, labels = loop.numpy_images()
    batch, devices = loop.config.batch_size, loop.devices
    per_device = batch // len(devices)
    self.steps_per_call = loop.pipeline.steps_per_chunk  # A whole chunk.
    calls = max(1, round(loop.steps_per_run / self.steps_per_call))
    self.calls_per_run = calls
    inputs = []
    for i in range(_DEVICE_INPUTS):
      idx = (np.arange(self.steps_per_call * batch) +
             i * self.steps_per_call * batch) % len(labels)
      x = images[idx].reshape((self.steps_per_call, len(devices), per_device) +
                              images.shape[1:])
      y = labels[idx].reshape((self.steps_per_call, len(devices), per_device))
      # (devices, steps, per_device, ...)
      x, y = np.swapaxes(x, 0, 1), np.swapaxes(y, 0, 1)
      inputs.append(_on_devices({'image': x, 'label': y}, devices))
    self.inputs = inputs
    self.state = jax.tree.map(jnp.copy, loop.state)
    self.metrics = jax_utils.replicate(train.Metrics.empty(), devices)

  @property
  def steps_per_run(self) -> int:
    return self.calls_per_run * self.steps_per_call

  def run(self) -> int:
    step_fn = self.loop.p_step
    for i in range(self.calls_per_run):
      self.state, self.metrics = step_fn(
          self.state, self.metrics, self.inputs[i % _DEVICE_INPUTS])
    jax.block_until_ready(self.state)
    return self.steps_per_run


class JitStep:
  """A plain `jax.jit` step per call: XLA's convolutions, no pmap or metrics."""

  def __init__(self, loop: LettercnnLoop):
    config = loop.config
    model = models.create_model(config.model,
                                loop.pipeline.splits.num_classes)
    self.state = train.create_train_state(
        jax.random.key(config.seed), model,
        (config.image_size, config.image_size, 1),
        optimizers.create(config, loop.schedule))
    images, labels = loop.numpy_images()
    batch = config.batch_size
    self.batches = [
        jax.device_put({'image': images[i * batch:(i + 1) * batch],
                        'label': labels[i * batch:(i + 1) * batch]})
        for i in range(_DEVICE_INPUTS)]
    self.step_fn = jax.jit(self.step, donate_argnums=0)
    self.steps_per_run = loop.steps_per_run

  @staticmethod
  def step(state, batch):
    def loss_fn(params):
      logits = state.apply_fn({'params': params}, batch['image'])
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, batch['label']).mean()
    return state.apply_gradients(grads=jax.grad(loss_fn)(state.params))

  def run(self) -> int:
    deadline = time.perf_counter() + _MAX_SECONDS.value
    for i in range(self.steps_per_run):
      self.state = self.step_fn(self.state, self.batches[i % _DEVICE_INPUTS])
      if i % 50 == 49 and time.perf_counter() > deadline:
        jax.block_until_ready(self.state)
        return i + 1
    jax.block_until_ready(self.state)
    return self.steps_per_run


# --------------------------------------------------------------------------
# PyTorch eager.


class TorchLoop:
  """The same LeNet and update in PyTorch eager, on the same images."""

  def __init__(self, loop: LettercnnLoop, threads: int):
    import torch  # pylint: disable=g-import-not-at-top
    from torch import nn  # pylint: disable=g-import-not-at-top
    self.torch, self.threads = torch, threads
    config = loop.config
    torch.manual_seed(0)

    class LeNet(nn.Module):

      def __init__(self, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, num_classes)

      def forward(self, x):
        x = x * 0.0125
        x = nn.functional.max_pool2d(self.conv1(x), 2, 2)
        x = nn.functional.max_pool2d(self.conv2(x), 2, 2)
        # NCHW -> NHWC before flattening, as the JAX model flattens.
        x = x.permute(0, 2, 3, 1).flatten(1)
        return self.fc2(nn.functional.relu(self.fc1(x)))

    self.model = LeNet(loop.pipeline.splits.num_classes)
    lr = config.learning_rate
    weight_decay = lr * config.weight_decay_per_lr
    weights = [p for n, p in self.model.named_parameters() if 'bias' not in n]
    biases = [p for n, p in self.model.named_parameters() if 'bias' in n]
    # Caffe/DIGITS: biases at twice the learning rate, decay on everything.
    self.optimizer = torch.optim.SGD(
        [{'params': weights, 'lr': lr},
         {'params': biases, 'lr': 2 * lr}],
        lr=lr, momentum=config.momentum, weight_decay=weight_decay)
    images, labels = loop.numpy_images()
    self.images = torch.from_numpy(
        np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    self.labels = torch.from_numpy(labels.astype(np.int64))
    self.batch = config.batch_size
    self.steps_per_run = loop.steps_per_run

  def run(self) -> int:
    torch = self.torch
    torch.set_num_threads(self.threads)
    n = len(self.labels) // self.batch
    deadline = time.perf_counter() + _MAX_SECONDS.value
    for i in range(self.steps_per_run):
      j = (i % n) * self.batch
      self.optimizer.zero_grad(set_to_none=True)
      logits = self.model(self.images[j:j + self.batch])
      loss = torch.nn.functional.cross_entropy(
          logits, self.labels[j:j + self.batch])
      loss.backward()
      self.optimizer.step()
      if i % 50 == 49 and time.perf_counter() > deadline:
        return i + 1
    return self.steps_per_run


# --------------------------------------------------------------------------
# Measurement.


def _timed(run: Callable[[], int]) -> tuple[int, float]:
  start = time.perf_counter()
  steps = run()
  return steps, time.perf_counter() - start


def measure(contenders: dict[str, Any], batch_size: int,
            repeats: int) -> dict[str, list[float]]:
  """Images/s of every contender per repeat, taking turns in rotating order."""
  names = list(contenders)
  for name in names:  # Warm-up: compilation, thread pools, caches.
    contenders[name].run()
  rates = {name: [] for name in names}
  for repeat in range(repeats):
    order = names[repeat % len(names):] + names[:repeat % len(names)]
    for name in order:
      steps, seconds = _timed(contenders[name].run)
      rates[name].append(steps * batch_size / seconds)
    print(f'  batch {batch_size} repeat {repeat + 1}/{repeats}: ' + ', '.join(
        f'{n} {rates[n][-1]:.0f}' for n in names), flush=True)
  return rates


def _load() -> float:
  return os.getloadavg()[0]


def _fmt_seconds(seconds: float) -> str:
  hours, rest = divmod(int(seconds), 3600)
  return f'{hours}h{rest // 60:02d}m'


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  if _THREADS.value:
    # Before anything starts JAX's backend, which sizes its pool from this.
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:_THREADS.value])
  # As many CPU devices as main would start for the largest of the batches.
  config = default.get_config()
  cpu_devices.start(config, [int(b) for b in _BATCH_SIZES.value])
  threads = xla_threads()
  peak = cpu_peak()
  torch_version = None
  if _TORCH.value:
    try:
      import torch  # pylint: disable=g-import-not-at-top
      torch_version = torch.__version__
    except ImportError:
      raise SystemExit('benchmark: PyTorch is missing; run `pip install -r '
                       'requirements-bench.txt` or pass --notorch') from None
  load_before = _load()
  print(f'lettercnn benchmark: {peak["model"]}, {threads} threads, '
        f'jax {jax.__version__}, torch {torch_version}, '
        f'{len(jax.local_devices())} {jax.default_backend()} device(s) '
        f'(cpu_devices={config.cpu_devices}); '
        f'load {load_before:.1f}', flush=True)

  results: dict[str, Any] = {}
  rows = ['lettercnn loop', 'bare step', 'jit step', 'torch', 'torch 1 thread']
  with tempfile.TemporaryDirectory() as workdir:
    for batch_size in BATCH_SIZES:
      if str(batch_size) not in _BATCH_SIZES.value:
        continue
      target = (_STEPS.value if batch_size == 1 else
                max(1, round(_IMAGES.value / batch_size)))
      loop = LettercnnLoop(batch_size, target, workdir)
      makers = {'loop': lambda: loop, 'bare': loop.bare_step,
                'jit': lambda: JitStep(loop)}
      if _TORCH.value:
        makers['torch'] = lambda: TorchLoop(loop, threads)
        if threads > 1:
          makers['torch1'] = lambda: TorchLoop(loop, 1)
      contenders = {_ROW_NAMES[k]: make() for k, make in makers.items()
                    if not _ONLY.value or k in _ONLY.value}
      print(f'batch {batch_size}: {loop.steps_per_run} steps per run '
            f'({loop.epochs_per_run} epoch(s) of {loop.steps_per_epoch}), '
            f'{_REPEATS.value} repeats', flush=True)
      rates = measure(contenders, batch_size, _REPEATS.value)
      medians = {n: statistics.median(r) for n, r in rates.items()}
      loop_rate = medians.get('lettercnn loop')
      bare_rate = medians.get('bare step')
      torch_rate = medians.get('torch')
      torch_best = max((medians[n] for n in ('torch', 'torch 1 thread')
                        if n in medians), default=None)

      def ratio(a, b):
        return a / b if a and b else None

      def paired(a, b):  # Median of the per-repeat ratios.
        if a not in rates or b not in rates:
          return None
        return statistics.median(x / y for x, y in zip(rates[a], rates[b]))

      state = jax.tree.map(lambda x: x[0], loop.state)
      batch = {'image': jnp.zeros((batch_size, 28, 28, 1)),
               'label': jnp.zeros((batch_size,), jnp.int32)}
      reference = models.create_model(loop.config.model,
                                      loop.pipeline.splits.num_classes)
      reference_state = train.create_train_state(
          jax.random.key(0), reference, (28, 28, 1),
          optimizers.create(loop.config, loop.schedule))
      xla_flops = {'loop_model': _xla_flops(JitStep.step, state, batch),
                   'xla_convolutions': _xla_flops(JitStep.step,
                                                  reference_state, batch)}
      results[f'batch{batch_size}'] = {
          'lettercnn_images_per_s': loop_rate,
          'bare_step_images_per_s': bare_rate,
          'jit_step_images_per_s': medians.get('jit step'),
          'torch_images_per_s': torch_rate,
          'torch_1thread_images_per_s': medians.get('torch 1 thread'),
          'ratio_vs_torch': ratio(loop_rate, torch_rate),
          'ratio_vs_best_torch': ratio(loop_rate, torch_best),
          'loop_vs_bare_step': ratio(loop_rate, bare_rate),
          'ratio_vs_torch_paired': paired('lettercnn loop', 'torch'),
          'ratio_vs_torch1_paired': paired('lettercnn loop',
                                           'torch 1 thread'),
          'loop_vs_bare_step_paired': paired('lettercnn loop', 'bare step'),
          'steps_per_run': {n: c.steps_per_run for n, c in contenders.items()},
          'samples_images_per_s': rates,
          'xla_flops_per_image': {k: v / batch_size if v else None
                                  for k, v in xla_flops.items()},
      }
      if _SPLIT.value:
        results[f'batch{batch_size}']['epoch_split'] = loop.epoch_split(
            _REPEATS.value)
      del loop, contenders

  flops = lenet_train_flops()
  empty = {'lettercnn_images_per_s': None, 'xla_flops_per_image': {}}
  for b in BATCH_SIZES:
    results.setdefault(f'batch{b}', dict(empty))
  b1 = results['batch1']
  results['sweep_projected_seconds'] = (
      SWEEP_STEPS / b1['lettercnn_images_per_s']
      if b1['lettercnn_images_per_s'] else None)
  results['flops_per_train_image'] = flops
  results['cpu'] = peak
  results['threads'] = threads
  results['versions'] = {'jax': jax.__version__, 'torch': torch_version,
                         'python': platform.python_version()}
  results['load_average'] = {'before': load_before, 'after': _load()}
  results['repeats'] = _REPEATS.value

  print()
  print(f'{"images/s (median of " + str(_REPEATS.value) + ")":34s}'
        + ''.join(f'{"batch " + str(b):>10s}' for b in BATCH_SIZES)
        + ''.join(f'{"b" + str(b) + " %peak":>11s}' for b in BATCH_SIZES))
  keys = {'lettercnn loop': 'lettercnn_images_per_s',
          'bare step': 'bare_step_images_per_s',
          'jit step': 'jit_step_images_per_s',
          'torch': 'torch_images_per_s',
          'torch 1 thread': 'torch_1thread_images_per_s'}
  labels = {'lettercnn loop': 'lettercnn loop',
            'bare step': 'bare step (loop\'s ceiling)',
            'jit step': 'jit step (XLA convs, 1 step/call)',
            'torch': f'PyTorch eager, {threads} threads',
            'torch 1 thread': 'PyTorch eager, 1 thread'}
  for row in rows:
    values = [results[f'batch{b}'].get(keys[row]) for b in BATCH_SIZES]
    if all(v is None for v in values):
      continue
    cells = ''.join(f'{v:10.0f}' if v else f'{"-":>10s}' for v in values)
    cells += ''.join(f'{100 * v * flops / peak["peak_flops"]:10.1f}%'
                     if v and peak['peak_flops'] else f'{"-":>11s}'
                     for v in values)
    print(f'{labels[row]:34s}{cells}')
  print()
  for b in BATCH_SIZES:
    r = results[f'batch{b}']
    if r.get('ratio_vs_torch'):
      print(f'batch {b:3d}: lettercnn loop / PyTorch ({threads} threads) = '
            f'{r["ratio_vs_torch"]:.2f}x (median of per-repeat ratios '
            f'{r["ratio_vs_torch_paired"]:.2f}x); / best PyTorch = '
            f'{r["ratio_vs_best_torch"]:.2f}x'
            + (f' (per-repeat ratios to 1 thread: median '
               f'{r["ratio_vs_torch1_paired"]:.2f}x)'
               if r.get('ratio_vs_torch1_paired') else ''))
    if r.get('loop_vs_bare_step'):
      print(f'batch {b:3d}: lettercnn loop / bare step = '
            f'{r["loop_vs_bare_step"]:.2f} (median of per-repeat ratios '
            f'{r["loop_vs_bare_step_paired"]:.2f}; target >= 0.90)')
  for b in BATCH_SIZES:
    split = results[f'batch{b}'].get('epoch_split')
    if split:
      total = split['train_epoch_s'] + split['evaluation_s']
      print(f'batch {b:3d} epoch split (median of {_REPEATS.value}): '
            f'{total:.2f} s = training steps {split["steps_s"]:.2f} s '
            f'({100 * split["steps_s"] / total:.0f}%) + waiting for input '
            f'{split["input_wait_s"]:.3f} s '
            f'({100 * split["input_wait_s"] / total:.1f}%) + evaluation '
            f'{split["evaluation_s"]:.3f} s '
            f'({100 * split["evaluation_s"] / total:.1f}%)')
  if results['sweep_projected_seconds']:
    print(f'full default sweep ({SWEEP_STEPS:,} batch-1 steps) at the loop\'s '
          f'batch-1 rate: {_fmt_seconds(results["sweep_projected_seconds"])} '
          f'({results["sweep_projected_seconds"]:.0f} s), one run at a time')
  xla = b1['xla_flops_per_image']
  print(f'FLOPs per training image: {flops / 1e6:.2f} M counted (2 x forward '
        f'MACs x 3, less conv1\'s input gradient); XLA cost analysis of one '
        f'batch-1 step: '
        + ', '.join(f'{k} {v / 1e6:.2f} M' for k, v in xla.items() if v))
  print(f'CPU peak: {peak["cores"]} cores x {peak["ghz"]:.2f} GHz x '
        f'{peak["flops_per_cycle_per_core"]} FLOP/cycle ({peak["isa"]}) = '
        f'{peak["peak_flops"] / 1e9:.0f} GFLOP/s fp32')
  print(f'load average: {load_before:.1f} before, '
        f'{results["load_average"]["after"]:.1f} after '
        f'({os.cpu_count()} cores; above the core count, expect noise)')
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(results, f, indent=2, sort_keys=True)
    print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
