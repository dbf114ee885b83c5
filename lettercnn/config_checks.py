"""Checks a config before any data is built or anything is compiled."""

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lettercnn import errors
from lettercnn.models import networks as models
from lettercnn.optim import optimizers
from lettercnn.optim import schedules
from lettercnn.data import splits

# Training runs in float32: a larger rate (biases train at twice it) is inf.
_MAX_LEARNING_RATE = float(np.finfo(np.float32).max) / 2
# Seeds reach numpy, tf.data and jax.random; all take this range.
_SEED_LIMIT = 2**32
# Classes of the generated dataset; other sources are counted when loaded.
_TOMBSTONE_CLASSES = 10


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise errors.InputError(message)


def _is_finite(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _is_positive_finite(value) -> bool:
  return _is_finite(value) and value > 0


def _check_choice(config: ml_collections.ConfigDict, field: str,
                  choices: tuple[str, ...]) -> None:
  _require(config[field] in choices,
           f'{field}={config[field]!r} is not one of {", ".join(choices)}')


def _check_solver(config: ml_collections.ConfigDict) -> None:
  _check_choice(config, 'optimizer', optimizers.OPTIMIZERS)
  _check_choice(config, 'momentum_form', optimizers.MOMENTUM_FORMS)
  _require(_is_finite(config.momentum) and 0 <= config.momentum < 1,
           f'momentum={config.momentum!r} must be in [0, 1)')
  _require(_is_positive_finite(config.bias_lr_mult),
           f'bias_lr_mult={config.bias_lr_mult!r} must be a positive finite '
           'number')


def _check_lr_policy(config: ml_collections.ConfigDict) -> None:
  """The fields the chosen policy reads, None resolved (see
  lettercnn.optim.schedules)."""
  _check_choice(config, 'lr_policy', schedules.POLICIES)
  policy, resolved = config.lr_policy, schedules.settings(config)
  gamma, power = resolved.lr_decay_factor, resolved.lr_power
  step = resolved.lr_step_percent
  if policy in ('step', 'multistep', 'exp'):
    _require(_is_positive_finite(gamma) and gamma <= 1,
             f'lr_decay_factor={gamma!r} must be in (0, 1] for lr_policy='
             f'{policy!r}')
  elif policy == 'inv':
    _require(_is_positive_finite(gamma),
             f'lr_decay_factor={gamma!r} must be a positive finite number for '
             "lr_policy='inv'")
  elif policy == 'sigmoid':
    _require(_is_finite(gamma) and gamma != 0,
             f'lr_decay_factor={gamma!r} must be a finite non-zero number for '
             "lr_policy='sigmoid' (positive to decay, as DIGITS' Gamma)")
  if policy in ('inv', 'poly'):
    _require(_is_positive_finite(power),
             f'lr_power={power!r} must be a positive finite number for '
             f'lr_policy={policy!r}')
  if policy in ('step', 'sigmoid'):
    _require(_is_positive_finite(step) and step <= 100,
             f'lr_step_percent={step!r} must be in (0, 100] for lr_policy='
             f'{policy!r}')
  if policy == 'multistep':
    percents = resolved.lr_multistep_percents
    _require(all(_is_positive_finite(p) and p < 100 for p in percents),
             f'lr_multistep_percents={tuple(percents)!r} must be numbers in '
             "(0, 100) for lr_policy='multistep'")




def check_cpu_devices(config: ml_collections.ConfigDict) -> None:
  """Raises InputError unless `config.cpu_devices` is an integer >= 1."""
  value = config.cpu_devices
  _require(isinstance(value, int) and not isinstance(value, bool)
           and value >= 1, f'cpu_devices={value!r} must be an integer >= 1')


def num_devices_to_use(config: ml_collections.ConfigDict) -> int:
  """The device count a run uses: `config.num_devices`, or all local ones.

  A multi-process run uses every process's devices, all of them.
  """
  if jax.process_count() > 1:
    _require(config.num_devices in (0, jax.device_count()),
             f'num_devices={config.num_devices}, but a run of '
             f'{jax.process_count()} processes trains on all their '
             f'{jax.device_count()} devices; leave num_devices at 0')
    return jax.device_count()
  available = jax.local_device_count()
  requested = config.num_devices or available
  _require(0 < requested <= available,
           f'num_devices={config.num_devices} but {available} local device(s) '
           f'({jax.default_backend()}) are available')
  return requested


def check_config(config: ml_collections.ConfigDict) -> int:
  """Raises InputError naming the first unusable field; returns the device count."""
  _require(_is_positive_finite(config.learning_rate),
           f'learning_rate={config.learning_rate!r} must be a positive finite '
           'number')
  _require(config.learning_rate <= _MAX_LEARNING_RATE,
           f'learning_rate={config.learning_rate!r} overflows float32, in '
           f'which training runs (biases train at twice it): at most '
           f'{_MAX_LEARNING_RATE:.3g}')
  _require(_is_finite(config.weight_decay_per_lr)
           and config.weight_decay_per_lr >= 0
           and math.isfinite(np.float32(config.weight_decay_per_lr
                                        * config.learning_rate)),
           f'weight_decay_per_lr={config.weight_decay_per_lr!r} must be a '
           'finite number >= 0 (times learning_rate, within float32)')
  for field in ('seed', 'dataset_seed'):
    value = config[field]
    _require(isinstance(value, int) and 0 <= value < _SEED_LIMIT,
             f'{field}={value!r} must be an integer in [0, 2**32)')
  _require(isinstance(config.batch_size, int) and config.batch_size >= 1,
           f'batch_size={config.batch_size!r} must be an integer >= 1')
  _require(isinstance(config.num_epochs, int) and config.num_epochs >= 1,
           f'num_epochs={config.num_epochs!r} must be an integer >= 1')
  _check_solver(config)
  _check_lr_policy(config)
  _require(0 < config.validation_fraction < 1,
           f'validation_fraction={config.validation_fraction!r} must be in '
           '(0, 1)')
  _check_choice(config, 'model', tuple(models.MODELS))
  _check_choice(config, 'mean_subtraction', splits.MEAN_SUBTRACTIONS)
  for field in ('examples_per_class', 'image_size', 'eval_batch_size',
                'log_every_steps', 'checkpoint_every_epochs',
                'sharpness_examples', 'sharpness_max_iterations'):
    value = config[field]
    _require(isinstance(value, int) and value >= 1,
             f'{field}={value!r} must be an integer >= 1')
  _require(_is_finite(config.divergence_loss_factor)
           and config.divergence_loss_factor > 1,
           f'divergence_loss_factor={config.divergence_loss_factor!r} must be '
           'a finite number > 1')
  _require(_is_finite(config.not_converged_margin_points)
           and 0 <= config.not_converged_margin_points <= 100,
           'not_converged_margin_points='
           f'{config.not_converged_margin_points!r} must be a number of '
           'percentage points in [0, 100]')
  min_size = models.MODELS[config.model].min_image_size
  _require(config.image_size >= min_size,
           f'image_size={config.image_size} is below {config.model}\'s '
           f'smallest input, {min_size}')
  _check_sharpness(config, measured=config.sharpness_every_steps > 0)
  check_cpu_devices(config)
  num_devices = num_devices_to_use(config)
  _require(config.batch_size % num_devices == 0,
           f'batch_size={config.batch_size} does not divide over '
           f'{num_devices} devices; use a multiple of {num_devices}, or '
           'fewer devices (e.g. --config.num_devices=1)')
  _check_memory(config, num_devices)
  num_train = _num_train(config)
  if num_train is not None:  # Else checked once the split is counted.
    schedules.check_total_steps(config, num_train // config.batch_size)
  return num_devices


def _num_train(config: ml_collections.ConfigDict) -> int | None:
  """The training split's size where the config alone tells it."""
  if config.dataset != 'tombstone_letters':
    return None
  per_class, _ = splits.per_class(config.examples_per_class,
                                       config.validation_fraction)
  return per_class * _TOMBSTONE_CLASSES


def _check_sharpness(config: ml_collections.ConfigDict, measured: bool) -> None:
  """The sharpness fields; the subset's size too if it will be `measured`.

  A folder's or catalog's split is counted when it loads; the subset is
  checked against it then (`Pipeline.first_train_examples`).
  """
  every = config.sharpness_every_steps
  _require(isinstance(every, int) and not isinstance(every, bool)
           and every >= 0,
           f'sharpness_every_steps={every!r} must be an integer >= 0 (0: off)')
  tolerance = config.sharpness_tolerance
  _require(_is_finite(tolerance) and 0 < tolerance < 1,
           f'sharpness_tolerance={tolerance!r} must be in (0, 1)')
  num_train = _num_train(config)
  if measured and num_train is not None:
    _require(config.sharpness_examples <= num_train,
             f'sharpness_examples={config.sharpness_examples} exceeds the '
             f'{num_train} training images of {config.dataset}')


# The range test needs this many points past fastai's trimmed ends.
MIN_LR_FIND_STEPS = 10


def check_lr_find(config: ml_collections.ConfigDict) -> None:
  """The LR range test's fields (config.lr_find) and its sharpness subset."""
  cfg = config.lr_find
  for field in ('min_lr', 'max_lr'):
    _require(_is_positive_finite(cfg[field]),
             f'lr_find.{field}={cfg[field]!r} must be a positive finite '
             'number')
  _require(cfg.min_lr < cfg.max_lr,
           f'lr_find.min_lr={cfg.min_lr!r} must be below lr_find.max_lr='
           f'{cfg.max_lr!r}')
  _require(cfg.max_lr <= _MAX_LEARNING_RATE,
           f'lr_find.max_lr={cfg.max_lr!r} overflows float32: at most '
           f'{_MAX_LEARNING_RATE:.3g}')
  _require(isinstance(cfg.num_steps, int) and not isinstance(cfg.num_steps,
                                                             bool)
           and cfg.num_steps >= MIN_LR_FIND_STEPS,
           f'lr_find.num_steps={cfg.num_steps!r} must be an integer >= '
           f'{MIN_LR_FIND_STEPS}')
  _require(_is_finite(cfg.smoothing) and 0 <= cfg.smoothing < 1,
           f'lr_find.smoothing={cfg.smoothing!r} must be in [0, 1)')
  _require(_is_finite(cfg.stop_factor) and cfg.stop_factor > 1,
           f'lr_find.stop_factor={cfg.stop_factor!r} must be a finite number '
           '> 1')
  _require(isinstance(cfg.seeds, int) and not isinstance(cfg.seeds, bool)
           and cfg.seeds >= 1
           and config.seed + cfg.seeds <= _SEED_LIMIT,
           f'lr_find.seeds={cfg.seeds!r} must be an integer >= 1 (seeds '
           'seed, seed + 1, ... below 2**32)')
  _check_sharpness(config, measured=True)


def _physical_memory_bytes() -> int:
  return os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def _check_memory(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Refuses a config whose data and model cannot fit in the machine's memory.

  Adds what a run certainly holds at once: the generated dataset cached as
  float32 images, parameters with their momentum, gradient and host copy,
  and one step's layer outputs and their gradients (the evaluation batch's
  outputs if larger). Real use is higher (im2col patches, XLA buffers, the
  libraries), so this is a lower bound: a config it refuses would surely run
  out of memory, after building data and compiling. On an accelerator the
  device's memory is smaller still; that is not checked here.
  """
  channels = 1 if config.grayscale else 3
  image_floats = config.image_size**2 * channels
  # A folder or catalog dataset has at least two classes.
  num_classes = (_TOMBSTONE_CLASSES if config.dataset == 'tombstone_letters'
                 else 2)
  model = models.create_model(config.model, num_classes)
  init = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((1, config.image_size, config.image_size,
                                    channels)), capture_intermediates=True))
  _, variables = init
  param_floats = sum(x.size for x in jax.tree.leaves(variables['params']))
  layer_floats = sum(x.size for x in jax.tree.leaves(
      variables['intermediates'])) + image_floats
  dataset_floats = (config.examples_per_class * num_classes * image_floats
                    if config.dataset == 'tombstone_letters' else 0)
  per_device_batch = config.batch_size // num_devices
  step_floats = max(2 * per_device_batch, config.eval_batch_size) * layer_floats
  parts = {'dataset cache': 4 * dataset_floats,
           'parameters and optimizer': 4 * 4 * param_floats,
           'layer outputs': 4 * num_devices * step_floats}
  needed, available = sum(parts.values()), _physical_memory_bytes()
  gib = 2.0**30
  _require(needed <= available,
           f'this config needs at least {needed / gib:.1f} GiB of memory ('
           + ', '.join(f'{k} {v / gib:.1f} GiB' for k, v in parts.items())
           + f'), more than the machine\'s {available / gib:.1f} GiB; lower '
           'image_size, batch_size, eval_batch_size or examples_per_class')
