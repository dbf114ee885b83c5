"""Measures whether the input pipeline keeps ahead of the train step it feeds.

Prints, in images per second (median over --repeats, the measurements taking
turns so that a change in machine load hits them all alike):
  * the pipeline alone: one epoch of `Pipeline.train_chunks` (the chunks of
    consecutive steps' batches the train loop consumes), on the host;
  * the pipeline with the host-to-device transfer of each chunk;
  * the train step: the train loop's `train.ChunkedTrainStep` at batch size 1
    (the default config's), on chunks already on the device;
and states PASS when the pipeline, transfer included, delivers at least ten
times as many images per second as the step consumes, else FAIL.

Making the pipeline reads both splits once, decoding the stored images into
its in-memory cache (so damaged files show before training); that is timed
and shown apart (building the dataset first, if it is not built yet, is
timed with it), and every epoch then reads the cache. The pipeline and the step are timed one after the
other, so neither competes with the other for the host's cores here.

Run from the repository root:

  python scripts/benchmark_input_pipeline.py [--examples_per_class=700]
      [--data_dir=DIR] [--steps=1000] [--repeats=3]
"""

import os
import statistics
import sys
import time
from typing import Iterable, Iterator

from absl import app
from absl import flags
from absl import logging
from flax import jax_utils
import jax
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top
from configs import default
from lettercnn.data import input_pipeline
from lettercnn.models import networks as models
from lettercnn.optim import optimizers
from lettercnn.optim import schedules
from lettercnn import train
# pylint: enable=g-import-not-at-top

_EXAMPLES_PER_CLASS = flags.DEFINE_integer(
    'examples_per_class', 700,
    'Images per letter of the tombstone_letters dataset (700: the real one).')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None,
    'TFDS data dir the dataset is built into once (default: TFDS default).')
_STEPS = flags.DEFINE_integer('steps', 1000, 'Train steps timed per repeat.')
_REPEATS = flags.DEFINE_integer(
    'repeats', 3, 'Repeats of each measurement; the median is reported.')

# The pipeline must deliver this many times the images the step consumes.
_REQUIRED_RATIO = 10.0
# Distinct on-device chunks the timed train steps cycle through.
_DEVICE_CHUNKS = 8


def _config() -> ml_collections.ConfigDict:
  """The default experiment (batch size 1) on the benchmark's dataset."""
  config = default.get_config()
  config.examples_per_class = _EXAMPLES_PER_CLASS.value
  config.data_dir = _DATA_DIR.value
  config.num_devices = 1
  return config


def _drain(
    chunks: Iterable[input_pipeline.Batch]) -> list[input_pipeline.Batch]:
  """Consumes `chunks`, waiting for any device copies; returns them."""
  consumed = list(chunks)
  jax.block_until_ready(consumed)
  return consumed


def _to_devices(chunks: Iterator[input_pipeline.Batch],
                devices: list[jax.Device]) -> Iterator[input_pipeline.Batch]:
  """The chunks copied to `devices`, split along their leading device axis."""
  sharding = jax.NamedSharding(jax.sharding.Mesh(np.array(devices), ('d',)),
                               jax.P('d'))
  for chunk in chunks:
    yield jax.device_put(chunk, sharding)


def pipeline_rate(pipeline: input_pipeline.Pipeline, epoch: int,
                  devices: list[jax.Device] | None = None) -> float:
  """Images/s of one epoch of training chunks, copied to `devices` if given."""
  start = time.perf_counter()
  chunks = pipeline.train_chunks(epoch)
  if devices is not None:
    chunks = _to_devices(chunks, devices)
  num_steps = sum(input_pipeline.chunk_steps(chunk) for chunk in _drain(chunks))
  return num_steps * pipeline.batch_size / (time.perf_counter() - start)


class TrainStepBenchmark:
  """The train loop's chunked pmap-ed step and state, fed chunks on device."""

  def __init__(self, config: ml_collections.ConfigDict,
               pipeline: input_pipeline.Pipeline, devices: list[jax.Device]):
    self._batch_size = config.batch_size
    self._steps_per_chunk = pipeline.steps_per_chunk
    schedule = schedules.create(config, pipeline.steps_per_epoch)
    model = models.create_model(config.model, pipeline.splits.num_classes,
                                lowering='matmul')
    channels = 1 if config.grayscale else 3
    state = train.create_train_state(
        jax.random.key(config.seed), model,
        (config.image_size, config.image_size, channels),
        optimizers.create(config, schedule))
    self._state = jax_utils.replicate(state, devices)
    self._metrics = jax_utils.replicate(train.TrainMetrics.empty(), devices)
    self._step = train.ChunkedTrainStep(devices, pipeline.steps_per_chunk)
    chunks = pipeline.train_chunks(0)
    self._chunks = list(_to_devices(
        (next(chunks) for _ in range(_DEVICE_CHUNKS)), devices))
    self._run(1)

  def _run(self, num_chunks: int) -> int:
    steps = 0
    for i in range(num_chunks):
      chunk = self._chunks[i % len(self._chunks)]
      self._state, self._metrics = self._step(self._state, self._metrics,
                                              chunk)
      steps += input_pipeline.chunk_steps(chunk)
    jax.block_until_ready((self._state, self._metrics))
    return steps

  def rate(self, steps: int) -> float:
    """Images/s of about `steps` train steps (whole chunks)."""
    num_chunks = max(1, steps // self._steps_per_chunk)
    start = time.perf_counter()
    steps = self._run(num_chunks)
    return steps * self._batch_size / (time.perf_counter() - start)


def _report(cold: float, host: float, transferred: float, step: float,
            batch_size: int) -> str:
  """The figures as a table, with the verdict on its last line."""
  ratio = transferred / step
  verdict = 'PASS' if ratio >= _REQUIRED_RATIO else 'FAIL'
  backend = jax.default_backend()
  return '\n'.join([
      f'input pipeline, made (decode + cache):        {cold:12,.0f} images/s',
      f'input pipeline, host batches:                 {host:12,.0f} images/s',
      f'input pipeline + transfer to the devices:     '
      f'{transferred:12,.0f} images/s',
      f'train step, batch {batch_size} ({backend}):'.ljust(46)
      + f'{step:12,.0f} images/s',
      f'pipeline / train step: {host / step:.1f}x on the host, '
      f'{ratio:.1f}x with the transfer',
      f'{verdict}: the pipeline with the transfer is {ratio:.1f}x the step '
      f'(needs >= {_REQUIRED_RATIO:g}x)',
  ])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _config()
  devices = jax.local_devices()[:config.num_devices]
  start = time.perf_counter()
  pipeline = input_pipeline.Pipeline(config, len(devices))
  cold = (pipeline.splits.num_train + pipeline.splits.num_validation) / (
      time.perf_counter() - start)
  logging.info('%d training images, batch size %d, %d steps per epoch.',
               pipeline.splits.num_train, pipeline.batch_size,
               pipeline.steps_per_epoch)
  benchmark = TrainStepBenchmark(config, pipeline, devices)
  host, transferred, step = [], [], []
  for repeat in range(_REPEATS.value):
    host.append(pipeline_rate(pipeline, epoch=repeat))
    transferred.append(pipeline_rate(pipeline, epoch=repeat,
                                     devices=devices))
    step.append(benchmark.rate(_STEPS.value))
    logging.info('Repeat %d: %.0f, %.0f and %.0f images/s.', repeat + 1,
                 host[-1], transferred[-1], step[-1])
  print(_report(cold, statistics.median(host), statistics.median(transferred),
                statistics.median(step), config.batch_size))


if __name__ == '__main__':
  app.run(main)
