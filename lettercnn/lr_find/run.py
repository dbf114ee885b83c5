"""lettercnn.lr_find's work: the range test's steps, the sharpness, the files.

Separate from the command so that flag parsing and config checks run before
TensorFlow and the data load.
"""

import itertools
import json
import math
import os
import time
from typing import Any

from flax import jax_utils
import jax
from jax import lax
import jax.numpy as jnp
from matplotlib.figure import Figure
import ml_collections
import numpy as np
import tensorflow as tf

from lettercnn.data import input_pipeline
from lettercnn import files
from lettercnn.lr_find import range_test as lr_range
from lettercnn.lr_find import workdir as lr_find_workdir
from lettercnn.models import networks as models
from lettercnn.optim import optimizers
from lettercnn.optim import sharpness
from lettercnn import train

RESULT_FILE = lr_range.RESULT_FILE
PLOT_FILE = 'lr_find.png'


def _range_test_chunk(state: train.TrainState, losses: jax.Array,
                      chunk: dict[str, jax.Array], num_steps: jax.Array):
  """`train.train_chunk`, recording each step's loss in `losses` instead."""

  def body(i, carry):
    state, losses = carry
    batch = jax.tree.map(
        lambda x: lax.dynamic_index_in_dim(x, i, keepdims=False), chunk)
    state, metrics = train.train_step(state, train.Metrics.empty(), batch)
    return state, losses.at[i].set(metrics.loss.compute())

  return lax.fori_loop(0, num_steps, body, (state, losses))


def _losses(config: ml_collections.ConfigDict, pipeline: input_pipeline.Pipeline,
            state: train.TrainState, devices: list[jax.Device],
            num_rates: int) -> list[float]:
  """The training loss of each step of the range test, until it stops.

  Training's own chunks and compiled step (`train.ChunkedTrainStep`), from
  epoch 0 on for as many epochs as the test takes; each step's loss is that
  of its batch before its update.
  """
  cfg = config.lr_find
  run_chunk = train.ChunkedTrainStep(devices, pipeline.steps_per_chunk,
                                     chunk_fn=_range_test_chunk)
  state = jax_utils.replicate(state, devices)
  buffer = np.zeros((len(devices), pipeline.steps_per_chunk), np.float32)
  average = lr_range.SmoothedLoss(cfg.smoothing, cfg.stop_factor)
  losses: list[float] = []
  for epoch in itertools.count():
    for chunk in pipeline.train_chunks(epoch):
      state, chunk_losses = run_chunk(state, buffer, chunk)
      steps = input_pipeline.chunk_steps(chunk)
      # Each device's loss is the mean over its equal share of the batch:
      # their mean is the global batch's.
      for loss in np.asarray(chunk_losses)[:, :steps].mean(axis=0):
        losses.append(float(loss))
        if average.add(losses[-1]) or len(losses) == num_rates:
          return losses


def _sharpness_tracker(config: ml_collections.ConfigDict,
                       pipeline: input_pipeline.Pipeline,
                       params: Any) -> sharpness.Tracker:
  """lambda_max over the first `sharpness_examples` training images."""
  model = models.create_model(config.model, pipeline.splits.num_classes)
  examples = pipeline.first_train_examples(config.sharpness_examples)
  return sharpness.Tracker(
      config, model.apply,
      sharpness.Subset(examples['image'], examples['label']), params)


def _initial_sharpness(config: ml_collections.ConfigDict,
                       tracker: sharpness.Tracker,
                       params: Any) -> dict[str, Any]:
  """lambda_max at initialisation, its bound, and at batch 1 the batch sharpness."""
  eigen = tracker.measure(params)
  result = {'lambda_max': eigen.value, 'iterations': eigen.iterations,
            'coarse_iterations': eigen.coarse_iterations,
            'residual': eigen.residual, 'converged': eigen.converged,
            'examples': len(tracker.subset),
            'bound': sharpness.stable_rate_bound(config, eigen.value),
            'formula': sharpness.bound_formula(config),
            'batch_sharpness': None, 'batch_bound': None}
  if config.batch_size == 1:
    value = sharpness.batch_sharpness(tracker.apply_fn, params,
                                      tracker.subset, tracker.multipliers)
    result.update(batch_sharpness=value,
                  batch_bound=sharpness.stable_rate_bound(config, value))
  return result


def _plot(result: dict[str, Any], path: str) -> None:
  """Loss against rate: each seed's smoothed curve, the suggestions, the bound."""
  figure = Figure(figsize=(7.5, 4.5))
  ax = figure.subplots()
  first = result['seeds'][0]
  ax.plot(first['rates'], first['losses'], color='0.85', lw=0.5,
          label=f'loss, each step (seed {first["seed"]})')
  lowest = math.inf
  for i, curve in enumerate(result['seeds']):
    ax.plot(curve['rates'], curve['smoothed'], color='C0', lw=1.0,
            alpha=1.0 if i == 0 else 0.45,
            label='smoothed' + (f', {len(result["seeds"])} seeds'
                                if len(result['seeds']) > 1 else ''))
    lowest = min(lowest, min(curve['smoothed']))
  marks = {f'{name} {rate:.2g}': rate
           for name, rate in result['suggestions'].items()}
  # The bound the recommendation falls back on: over several seeds, theirs.
  over_seeds = result['bound_over_seeds']
  if len(result['seeds']) > 1 and over_seeds is not None:
    marks[f'curvature bound {over_seeds["median"]:.2g} (median of '
          f'{len(result["seeds"])} seeds)'] = over_seeds['median']
  elif result['sharpness']['bound'] is not None:
    marks[f'curvature bound {result["sharpness"]["bound"]:.2g}'] = (
        result['sharpness']['bound'])
  for i, (label, rate) in enumerate(marks.items()):
    ax.axvline(rate, color=f'C{i + 1}', ls=':' if 'bound' in label else '--',
               label=label)
  if result['recommended'] is not None:
    ax.axvline(result['recommended'], color='k', lw=1.5,
               label=f'recommended {result["recommended"]:.2g}')
  if math.isfinite(lowest):
    ax.set_ylim(0.8 * lowest, 4.2 * lowest)
  ax.set_xscale('log')
  ax.set_xlabel('learning rate')
  ax.set_ylabel('training loss')
  ax.set_title(f'LR range test, {result["config_name"]}')
  handles, labels = ax.get_legend_handles_labels()
  unique = dict(zip(labels, handles))
  ax.legend(unique.values(), unique.keys(), fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=110)


# TensorBoard keeps 1000 points of a scalar by default; writing more (a clu
# write per step costs ~2 ms) would only be thrown away.
_MAX_EVENT_POINTS = 1000


def _write_events(workdir: str, result: dict[str, Any]) -> None:
  """The first seed's curve as TensorBoard scalars (at most 1000 points).

  Into one event file whose name ends in `lr_find_workdir.EVENT_SUFFIX`. A
  rerun recomputes the same curve (it is a function of the config), so once
  the new file is written the event files of earlier tests here, which carry
  that suffix, are removed; no other file is.
  """
  earlier = lr_find_workdir.own_event_files(workdir)
  curve = result['seeds'][0]
  num_points = len(curve['rates'])
  writer = tf.summary.create_file_writer(
      workdir, filename_suffix=lr_find_workdir.EVENT_SUFFIX)
  with writer.as_default():
    for step in sorted(set(np.linspace(0, num_points - 1, min(
        num_points, _MAX_EVENT_POINTS)).round().astype(int).tolist())):
      for tag, value in (('lr_find/learning_rate', curve['rates'][step]),
                         ('lr_find/loss', curve['losses'][step]),
                         ('lr_find/smoothed_loss', curve['smoothed'][step])):
        tf.summary.scalar(tag, value, step=step)
  writer.close()
  written = set(lr_find_workdir.own_event_files(workdir)) - set(earlier)
  for path in earlier:
    if path not in written:
      os.remove(path)


def _initial_state(config: ml_collections.ConfigDict,
                   devices: list[jax.Device], num_classes: int,
                   rates: np.ndarray, seed: int) -> train.TrainState:
  """Training's initial state from `seed`, its rate rising along `rates`."""
  schedule_rates = jnp.asarray(rates, jnp.float32)
  schedule = lambda count: schedule_rates[jnp.minimum(count, len(rates) - 1)]
  model = models.create_model(config.model, num_classes)
  channels = 1 if config.grayscale else 3
  return train.create_train_state(
      jax.random.key(seed),
      train.training_model(model, devices, config.batch_size // len(devices)),
      (config.image_size, config.image_size, channels),
      optimizers.create(config, schedule))


def _range_test(config: ml_collections.ConfigDict,
                pipeline: input_pipeline.Pipeline, devices: list[jax.Device],
                rates: np.ndarray, state: train.TrainState,
                seed: int) -> dict[str, Any]:
  """One range test from `state`, `seed`'s initial state, in its batch order."""
  cfg = config.lr_find
  losses = _losses(config, pipeline.reseeded(seed), state, devices,
                   len(rates))
  curve = lr_range.analyse(losses, rates, beta=cfg.smoothing,
                           stop_factor=cfg.stop_factor,
                           num_steps=cfg.num_steps)
  return {'seed': seed, 'steps_run': len(curve.losses), 'rates': curve.rates,
          'losses': curve.losses, 'smoothed': curve.smoothed,
          'suggestions': curve.suggestions,
          'loss_drop': lr_range.loss_drop(curve.smoothed, cfg.num_steps)}


def run(config: ml_collections.ConfigDict, workdir: str,
        num_devices: int) -> dict[str, Any]:
  """The range test and sharpness of `config`; writes and returns the result.

  The sharpness is at `config.seed`'s initialisation; the range test runs
  from it and from the next `lr_find.seeds - 1` seeds' too, each with the
  curvature bound at its own initialisation.
  """
  started = time.monotonic()
  cfg = config.lr_find
  devices = jax.local_devices()[:num_devices]
  pipeline = input_pipeline.Pipeline(config, num_devices)
  num_classes = pipeline.splits.num_classes
  loaded = time.monotonic()
  # The full sharpness is at the first seed's initial parameters, which its
  # range test then trains from; the other seeds' get lambda_max alone.
  rates = lr_range.rates(cfg.min_lr, cfg.max_lr, cfg.num_steps)
  first = _initial_state(config, devices, num_classes, rates, config.seed)
  tracker = _sharpness_tracker(config, pipeline, first.params)
  initial_sharpness = _initial_sharpness(config, tracker, first.params)
  measured = time.monotonic()
  curves, other_seeds_sharpness_s = [], 0.0
  for seed in range(config.seed, config.seed + cfg.seeds):
    if seed == config.seed:
      state, lambda_max = first, initial_sharpness['lambda_max']
    else:
      state = _initial_state(config, devices, num_classes, rates, seed)
      start = time.monotonic()
      lambda_max = tracker.measure(state.params).value
      other_seeds_sharpness_s += time.monotonic() - start
    curve = _range_test(config, pipeline, devices, rates, state, seed)
    curve.update(lambda_max=lambda_max,
                 bound=sharpness.stable_rate_bound(config, lambda_max))
    curves.append(curve)
  per_seed = [curve['suggestions'] for curve in curves]
  bounds = [curve['bound'] for curve in curves]
  recommended, reason = lr_range.recommend(
      per_seed, [curve['loss_drop'] for curve in curves], bounds)
  finished = time.monotonic()
  result = {
      'config_name': os.path.basename(os.path.normpath(workdir)),
      'min_lr': cfg.min_lr, 'max_lr': cfg.max_lr, 'num_steps': cfg.num_steps,
      'suggestions': {name: lr_range.median_rate([s[name] for s in per_seed])
                      for name in lr_range.SUGGESTIONS},
      'spread': {name: lr_range.spread([s[name] for s in per_seed])
                 for name in lr_range.SUGGESTIONS},
      'recommended': recommended, 'reason': reason,
      'sharpness': initial_sharpness, 'seeds': curves,
      'bound_over_seeds': None if None in bounds else {
          'median': lr_range.median_rate(bounds),
          'spread': lr_range.spread(bounds)},
      'timings_s': {'data': loaded - started, 'sharpness': measured - loaded,
                    'other_seeds_sharpness': other_seeds_sharpness_s,
                    'range_test': (finished - measured
                                   - other_seeds_sharpness_s),
                    'total': finished - started},
      'config': config.to_dict(),
  }
  path = os.path.join(workdir, RESULT_FILE)
  files.atomic_write_text(path, json.dumps(result, indent=1, default=str))
  _plot(result, os.path.join(workdir, PLOT_FILE))
  _write_events(workdir, result)
  return result
