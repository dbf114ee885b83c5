"""Flax modules: the CNNs the study trains, as NVIDIA DIGITS defines them.

Every model is called as `model.apply(variables, images_nhwc, train=...)`:
`train=True` turns dropout on (drawing from the 'dropout' rng), `train=False`
(the default, for evaluation) is deterministic. `lowering` picks how
convolutions are computed ('xla' or, for the models that list them in
`lowerings`, 'matmul' and 'matmul_chwn'); `min_image_size` is the smallest
input side.
"""

from typing import Callable, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from lettercnn.models import layers

# Caffe's "xavier" filler: uniform in +-sqrt(3 / fan_in).
xavier_uniform = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')
# TensorFlow's xavier_initializer (Glorot): uniform in
# +-sqrt(6 / (fan_in + fan_out)).
glorot_uniform = nn.initializers.xavier_uniform()


def _check_lowering(model: nn.Module) -> None:
  if model.lowering not in model.lowerings:
    raise ValueError(f'{type(model).__name__} has no lowering '
                     f'{model.lowering!r}: {" or ".join(model.lowerings)}.')


def _lenet_features(x: jnp.ndarray, lowering: str,
                    kernel_init: nn.initializers.Initializer,
                    activation: Callable[[jnp.ndarray], jnp.ndarray]
                    ) -> jnp.ndarray:
  """LeNet's convolutions, flattened: both DIGITS LeNets share them.

  conv 20@5x5 -> activation -> max-pool 2/2 -> conv 50@5x5 -> activation ->
  max-pool 2/2, 'VALID' throughout. 'matmul' computes the convolutions and
  pools with `lettercnn.models.layers`; the first convolution skips the gradient of
  its input, which is data.

  Raises:
    ValueError: the images are too small to leave a pixel.
  """
  image_hw = x.shape[1:3]
  if lowering == 'matmul_chwn':
    x = _lenet_features_chwn(x, kernel_init, activation)
  else:
    x = _lenet_features_nhwc(x, lowering, kernel_init, activation)
  if x.shape[1] < 1 or x.shape[2] < 1:  # Not a network of biases alone.
    raise ValueError(f'images of {image_hw[0]}x{image_hw[1]} are too small '
                     f'for LeNet (at least {LeNet.min_image_size} pixels)')
  return x.reshape((x.shape[0], -1))


def _lenet_features_chwn(x: jnp.ndarray,
                         kernel_init: nn.initializers.Initializer,
                         activation: Callable[[jnp.ndarray], jnp.ndarray]
                         ) -> jnp.ndarray:
  """`_lenet_features`' stack with the batch minor; NHWC maps out.

  The layers are named as `nn.Conv` names them, so the parameters are the
  other lowerings'. The two transposes move the images and the last pooled
  maps, the stack's smallest tensors.
  """
  x = jnp.transpose(x, (3, 1, 2, 0))
  x = layers.ConvCHWN(20, (5, 5), kernel_init, input_grad=False,
                      name='Conv_0')(x)
  x = layers.max_pool_2x2_chwn(activation(x))
  x = layers.ConvCHWN(50, (5, 5), kernel_init, name='Conv_1')(x)
  x = layers.max_pool_2x2_chwn(activation(x))
  return jnp.transpose(x, (3, 1, 2, 0))


def _lenet_features_nhwc(x: jnp.ndarray, lowering: str,
                         kernel_init: nn.initializers.Initializer,
                         activation: Callable[[jnp.ndarray], jnp.ndarray]
                         ) -> jnp.ndarray:
  """`_lenet_features`' stack in NHWC, with XLA's or the matmul lowering."""
  if lowering == 'matmul':
    conv1 = {'conv_general_dilated': layers.conv_general_dilated(False)}
    conv2 = {'conv_general_dilated': layers.conv_general_dilated(True)}
    pool = layers.max_pool_2x2
  else:
    conv1 = conv2 = {}
    pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  x = nn.Conv(20, (5, 5), padding='VALID', kernel_init=kernel_init,
              **conv1)(x)
  x = pool(activation(x))
  x = nn.Conv(50, (5, 5), padding='VALID', kernel_init=kernel_init,
              **conv2)(x)
  return pool(activation(x))


class LeNet(nn.Module):
  """LeNet exactly as NVIDIA DIGITS defines it (Caffe backend).

  conv 20@5x5 -> max-pool 2/2 -> conv 50@5x5 -> max-pool 2/2 -> fc 500 -> ReLU
  -> fc num_classes. No activation after the convolutions, inputs scaled by
  0.0125 (DIGITS' `scale` for 0..255 pixels), Xavier weights, zero biases.
  No dropout, so `train` changes nothing.

  `lowering` picks how convolutions and pooling are computed, with the same
  parameters and results up to float rounding: 'xla' (XLA's convolution and
  reduce-window; best for large inference batches), 'matmul' (im2col and
  matrix products, `lettercnn.models.layers`; several times faster to train on CPU
  at batch 1) or 'matmul_chwn' (the same in (C, H, W, N) layout, the batch
  minor; faster to train on CPU at larger batches).
  """
  num_classes: int
  input_scale: float = 0.0125
  lowering: str = 'xla'
  lowerings: ClassVar[tuple[str, ...]] = ('xla', 'matmul', 'matmul_chwn')
  # The smallest input side: two 5x5 'VALID' convolutions and two 2x2 pools
  # leave 16 -> 12 -> 6 -> 2 -> 1 pixel.
  min_image_size: ClassVar[int] = 16

  @nn.compact
  def __call__(self, images_nhwc: jnp.ndarray,
               train: bool = False) -> jnp.ndarray:
    del train  # Training and evaluation compute the same.
    _check_lowering(self)
    x = images_nhwc.astype(jnp.float32) * self.input_scale
    x = _lenet_features(x, self.lowering, xavier_uniform, lambda x: x)
    x = nn.Dense(500, kernel_init=xavier_uniform)(x)
    x = nn.relu(x)
    return nn.Dense(self.num_classes, kernel_init=xavier_uniform)(x)


class LeNetTF(LeNet):
  """LeNet as DIGITS' TensorFlow backend defines it.

  x * 0.0125 -> conv 20@5x5 + ReLU -> max-pool 2/2 -> conv 50@5x5 + ReLU ->
  max-pool 2/2 -> fc 500 + ReLU -> dropout 0.5 (training only) -> fc
  num_classes. Glorot-uniform weights (TensorFlow's xavier_initializer, fan
  average, where Caffe's LeNet uses fan in), zero biases. The layers, their
  parameters, `lowering` and `min_image_size` are the Caffe LeNet's.
  """
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, images_nhwc: jnp.ndarray,
               train: bool = False) -> jnp.ndarray:
    _check_lowering(self)
    x = images_nhwc.astype(jnp.float32) * self.input_scale
    x = _lenet_features(x, self.lowering, glorot_uniform, nn.relu)
    x = nn.Dense(500, kernel_init=glorot_uniform)(x)
    x = nn.relu(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=glorot_uniform)(x)


def _caffe_conv(features: int, size: int, name: str, bias: float,
                stride: int = 1, pad: int = 0, groups: int = 1) -> nn.Conv:
  """A convolution with DIGITS AlexNet's fillers: N(0, 0.01) weights."""
  return nn.Conv(features, (size, size), strides=stride, padding=pad,
                 feature_group_count=groups,
                 kernel_init=nn.initializers.normal(0.01),
                 bias_init=nn.initializers.constant(bias), name=name)


def _caffe_dense(features: int, name: str, std: float,
                 bias: float) -> nn.Dense:
  return nn.Dense(features, kernel_init=nn.initializers.normal(std),
                  bias_init=nn.initializers.constant(bias), name=name)


class AlexNet(nn.Module):
  """AlexNet as NVIDIA DIGITS defines it (Caffe backend, alexnet.prototxt).

  conv1 96@11x11 stride 4, ReLU, LRN, max-pool 3/2; conv2 256@5x5 pad 2
  groups 2, ReLU, LRN, max-pool 3/2; conv3 384@3x3 pad 1, ReLU; conv4 384@3x3
  pad 1 groups 2, ReLU; conv5 256@3x3 pad 1 groups 2, ReLU, max-pool 3/2; fc6
  4096, ReLU, dropout 0.5; fc7 4096, ReLU, dropout 0.5; fc8 num_classes. LRN
  is Caffe's across channels (size 5, alpha 1e-4, beta 0.75). The prototxt's
  fillers: weights N(0, 0.01), N(0, 0.005) for fc6 and fc7; biases 0.1 for
  conv2, conv4, conv5, fc6 and fc7, else 0.

  Pixels go in unscaled, as DIGITS feeds them (less the mean, which the
  input pipeline subtracts per `config.mean_subtraction`). The input is the
  whole image at `config.image_size`: DIGITS' random 227x227 crop and
  mirroring in training (centre crop in validation) are not done. Pooling
  rounds up as Caffe's does (`layers.caffe_max_pool`), so a side the stride
  does not divide keeps its last, partial window, and every map has Caffe's
  size; at DIGITS' 227 pixels floor rounding would give the same sizes.

  The convolutions are XLA's: the matmul lowering does not do strided,
  padded or grouped ones, and AlexNet is for accelerators anyway, so
  'xla' is the only `lowering`.
  """
  num_classes: int
  dropout_rate: float = 0.5
  lowering: str = 'xla'
  lowerings: ClassVar[tuple[str, ...]] = ('xla',)
  # The smallest input side, with Caffe's rounding: conv1 39 -> 8, pool1 -> 4,
  # conv2 4, pool2 -> 2, conv3-5 2, pool5 -> 1 (38 gives conv1 7, pool1 3,
  # pool2 1 and no pool5 window).
  min_image_size: ClassVar[int] = 39

  @nn.compact
  def __call__(self, images_nhwc: jnp.ndarray,
               train: bool = False) -> jnp.ndarray:
    _check_lowering(self)

    def lrn_pool(x):
      return layers.caffe_max_pool(layers.local_response_norm(x), 3, 2)

    x = images_nhwc.astype(jnp.float32)
    x = lrn_pool(nn.relu(_caffe_conv(96, 11, 'conv1', 0.0, stride=4)(x)))
    x = lrn_pool(nn.relu(_caffe_conv(256, 5, 'conv2', 0.1, pad=2,
                                     groups=2)(x)))
    x = nn.relu(_caffe_conv(384, 3, 'conv3', 0.0, pad=1)(x))
    x = nn.relu(_caffe_conv(384, 3, 'conv4', 0.1, pad=1, groups=2)(x))
    x = nn.relu(_caffe_conv(256, 3, 'conv5', 0.1, pad=1, groups=2)(x))
    x = layers.caffe_max_pool(x, 3, 2)
    x = x.reshape((x.shape[0], -1))
    for name in ('fc6', 'fc7'):
      x = nn.relu(_caffe_dense(4096, name, 0.005, 0.1)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return _caffe_dense(self.num_classes, 'fc8', 0.01, 0.0)(x)


MODELS: dict[str, Callable[..., nn.Module]] = {
    'lenet': LeNet, 'lenet_tf': LeNetTF, 'alexnet': AlexNet}


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Returns the model called `name` (a key of MODELS) for `num_classes`."""
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; choose one of {sorted(MODELS)}.')
  return MODELS[name](num_classes=num_classes, **kwargs)
