"""Flax modules: the CNNs the study trains."""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

# Caffe's "xavier" filler: uniform in +-sqrt(3 / fan_in).
xavier_uniform = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')


class LeNet(nn.Module):
  """LeNet exactly as NVIDIA DIGITS defines it (Caffe backend).

  conv 20@5x5 -> max-pool 2/2 -> conv 50@5x5 -> max-pool 2/2 -> fc 500 -> ReLU
  -> fc num_classes. No activation after the convolutions, inputs scaled by
  0.0125 (DIGITS' `scale` for 0..255 pixels), Xavier weights, zero biases.
  """
  num_classes: int
  input_scale: float = 0.0125

  @nn.compact
  def __call__(self, images_nhwc: jnp.ndarray) -> jnp.ndarray:
    x = images_nhwc.astype(jnp.float32) * self.input_scale
    x = nn.Conv(20, (5, 5), padding='VALID', kernel_init=xavier_uniform)(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.Conv(50, (5, 5), padding='VALID', kernel_init=xavier_uniform)(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(500, kernel_init=xavier_uniform)(x)
    x = nn.relu(x)
    return nn.Dense(self.num_classes, kernel_init=xavier_uniform)(x)


MODELS: dict[str, Callable[..., nn.Module]] = {'lenet': LeNet}


def create_model(name: str, num_classes: int) -> nn.Module:
  """Returns the model called `name` (a key of MODELS) for `num_classes`."""
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; choose one of {sorted(MODELS)}.')
  return MODELS[name](num_classes=num_classes)
