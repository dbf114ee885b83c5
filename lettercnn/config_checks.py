"""Checks a config before any data is built or anything is compiled."""

import math

import jax
import ml_collections

from lettercnn import errors
from lettercnn import models


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise errors.InputError(message)


def _is_positive_finite(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and value > 0)


def num_devices_to_use(config: ml_collections.ConfigDict) -> int:
  """The device count a run uses: `config.num_devices`, or all local ones."""
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
  _require(isinstance(config.batch_size, int) and config.batch_size >= 1,
           f'batch_size={config.batch_size!r} must be an integer >= 1')
  _require(isinstance(config.num_epochs, int) and config.num_epochs >= 1,
           f'num_epochs={config.num_epochs!r} must be an integer >= 1')
  _require(_is_positive_finite(config.lr_decay_factor)
           and config.lr_decay_factor <= 1,
           f'lr_decay_factor={config.lr_decay_factor!r} must be in (0, 1]')
  _require(isinstance(config.lr_decay_every_epochs, int)
           and config.lr_decay_every_epochs >= 1,
           f'lr_decay_every_epochs={config.lr_decay_every_epochs!r} must be an '
           'integer >= 1')
  _require(0 <= config.momentum < 1,
           f'momentum={config.momentum!r} must be in [0, 1)')
  _require(0 < config.validation_fraction < 1,
           f'validation_fraction={config.validation_fraction!r} must be in '
           '(0, 1)')
  _require(config.model in models.MODELS,
           f'model={config.model!r} is not one of {sorted(models.MODELS)}')
  for field in ('examples_per_class', 'image_size', 'eval_batch_size',
                'log_every_steps', 'checkpoint_every_epochs'):
    value = config[field]
    _require(isinstance(value, int) and value >= 1,
             f'{field}={value!r} must be an integer >= 1')
  _require(config.divergence_loss_factor > 1,
           f'divergence_loss_factor={config.divergence_loss_factor!r} must be '
           '> 1')
  num_devices = num_devices_to_use(config)
  _require(config.batch_size % num_devices == 0,
           f'batch_size={config.batch_size} does not divide over '
           f'{num_devices} devices; use a multiple of {num_devices}, or '
           'fewer devices (e.g. --config.num_devices=1)')
  return num_devices
