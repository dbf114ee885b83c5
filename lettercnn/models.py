"""Flax modules: the CNNs the study trains."""

from typing import Callable, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from lettercnn import layers

# Caffe's "xavier" filler: uniform in +-sqrt(3 / fan_in).
xavier_uniform = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')


class LeNet(nn.Module):
  """LeNet exactly as NVIDIA DIGITS defines it (Caffe backend).

  conv 20@5x5 -> max-pool 2/2 -> conv 50@5x5 -> max-pool 2/2 -> fc 500 -> ReLU
  -> fc num_classes. No activation after the convolutions, inputs scaled by
  0.0125 (DIGITS' `scale` for 0..255 pixels), Xavier weights, zero biases.

  `lowering` picks how convolutions and pooling are computed, with the same
  parameters and results up to float rounding: 'xla' (XLA's convolution and
  reduce-window; best for large inference batches) or 'matmul' (im2col and
  matrix products, `lettercnn.layers`; several times faster to train on CPU).
  """
  num_classes: int
  input_scale: float = 0.0125
  lowering: str = 'xla'
  # The smallest input side: two 5x5 'VALID' convolutions and two 2x2 pools
  # leave 16 -> 12 -> 6 -> 2 -> 1 pixel.
  min_image_size: ClassVar[int] = 16

  @nn.compact
  def __call__(self, images_nhwc: jnp.ndarray) -> jnp.ndarray:
    if self.lowering == 'matmul':
      conv1 = {'conv_general_dilated': layers.conv_general_dilated(False)}
      conv2 = {'conv_general_dilated': layers.conv_general_dilated(True)}
      pool = layers.max_pool_2x2
    elif self.lowering == 'xla':
      conv1 = conv2 = {}
      pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    else:
      raise ValueError(f'Unknown lowering {self.lowering!r}: xla or matmul.')
    x = images_nhwc.astype(jnp.float32) * self.input_scale
    x = nn.Conv(20, (5, 5), padding='VALID', kernel_init=xavier_uniform,
                **conv1)(x)
    x = pool(x)
    x = nn.Conv(50, (5, 5), padding='VALID', kernel_init=xavier_uniform,
                **conv2)(x)
    x = pool(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(500, kernel_init=xavier_uniform)(x)
    x = nn.relu(x)
    return nn.Dense(self.num_classes, kernel_init=xavier_uniform)(x)


MODELS: dict[str, Callable[..., nn.Module]] = {'lenet': LeNet}


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Returns the model called `name` (a key of MODELS) for `num_classes`."""
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; choose one of {sorted(MODELS)}.')
  return MODELS[name](num_classes=num_classes, **kwargs)
