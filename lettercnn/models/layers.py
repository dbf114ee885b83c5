"""Layers flax lacks: Caffe's LRN and pooling, and CPU-friendly LeNet layers.

`local_response_norm` and `caffe_max_pool` compute Caffe's LRN and max-pooling
(rounded up) for DIGITS' AlexNet.

The rest are convolution and max-pooling as matrix products, for fast
training on CPU. XLA:CPU runs LeNet's small convolutions, and above all their
gradients inside a `lax.scan` over training steps, several times slower than
the same arithmetic written as im2col + matrix product: the products go to
the CPU's tuned GEMM library and the patch gathering is plain slicing.
`conv_valid` computes exactly `lax.conv_general_dilated` with stride 1,
'VALID' padding and NHWC/HWIO layouts (up to float rounding), with a
hand-written gradient that keeps every product in a GEMM-friendly layout.
`max_pool_2x2` is `nn.max_pool(x, (2, 2), strides=(2, 2))` with the same
values and gradient, NaN and infinities included, without the scatter that
the gradient of `reduce_window` lowers to on CPU. `conv_valid_chwn`,
`max_pool_2x2_chwn` and `ConvCHWN` compute the same in (C, H, W, N) layout,
the batch minor, for batches above 1: there the NHWC patch matrix, built by
a concatenation along its minor axis, costs more than the products, and with
the batch minor every patch slice, pooling corner and col2im shift moves
whole runs of the batch.
"""

import functools
import math

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp


def _patches(x: jax.Array, kh: int, kw: int) -> jax.Array:
  """(N, H, W, C) -> (N, OH, OW, kh*kw*C), features in HWIO-reshape order."""
  _, h, w, _ = x.shape
  oh, ow = h - kh + 1, w - kw + 1
  return jnp.concatenate(
      [x[:, i:i + oh, j:j + ow, :] for i in range(kh) for j in range(kw)],
      axis=-1)


def _patches_transposed(x: jax.Array, kh: int, kw: int) -> jax.Array:
  """(N, H, W, C) -> (kh*kw*C, N*OH*OW): `_patches` transposed, built so."""
  n, h, w, c = x.shape
  oh, ow = h - kh + 1, w - kw + 1
  x = jnp.transpose(x, (3, 0, 1, 2))
  return jnp.concatenate(
      [x[:, :, i:i + oh, j:j + ow].reshape(c, n * oh * ow)
       for i in range(kh) for j in range(kw)], axis=0)


def _col2im(patch_grads: jax.Array, kh: int, kw: int, h: int,
            w: int) -> jax.Array:
  """Adjoint of `_patches`: (N, OH, OW, kh*kw*C) -> (N, H, W, C)."""
  n, oh, ow, k = patch_grads.shape
  c = k // (kh * kw)
  patch_grads = patch_grads.reshape(n, oh, ow, kh, kw, c)
  rows = []
  for i in range(kh):
    row = sum(jnp.pad(patch_grads[:, :, :, i, j, :],
                      ((0, 0), (0, 0), (j, w - ow - j), (0, 0)))
              for j in range(kw))
    rows.append(jnp.pad(row, ((0, 0), (i, h - oh - i), (0, 0), (0, 0))))
  # A sum over a stacked axis is a reduction, which XLA computes once; a
  # chain of adds would be fused into, and recomputed by, every consumer.
  return jnp.stack(rows).sum(axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x: jax.Array, kernel: jax.Array, input_grad: bool) -> jax.Array:
  kh, kw, cin, cout = kernel.shape
  return lax.dot_general(_patches(x, kh, kw),
                         kernel.reshape(kh * kw * cin, cout),
                         (((3,), (0,)), ((), ())))


def _conv_fwd(x, kernel, input_grad):
  return _conv(x, kernel, input_grad), (x, kernel)


def _conv_bwd(input_grad, residuals, out_grad):
  x, kernel = residuals
  kh, kw, cin, cout = kernel.shape
  out_grad = out_grad.reshape(-1, cout)
  kernel_grad = (_patches_transposed(x, kh, kw) @ out_grad).reshape(
      kernel.shape)
  if not input_grad:  # The network's input: nobody reads its gradient.
    return jnp.zeros_like(x), kernel_grad
  patch_grads = out_grad @ jnp.transpose(kernel.reshape(kh * kw * cin, cout))
  n, h, w, _ = x.shape
  patch_grads = patch_grads.reshape(n, h - kh + 1, w - kw + 1, kh * kw * cin)
  return _col2im(patch_grads, kh, kw, h, w), kernel_grad


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_valid(x: jax.Array, kernel: jax.Array,
               input_grad: bool = True) -> jax.Array:
  """Stride-1 'VALID' convolution of NHWC `x` with an HWIO `kernel`.

  `input_grad=False` skips the gradient with respect to `x` (zeros instead),
  for a first layer whose input is data.
  """
  return _conv(x, kernel, input_grad)


def conv_general_dilated(input_grad: bool = True):
  """`conv_valid` with `lax.conv_general_dilated`'s signature, for `nn.Conv`."""

  def conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
           rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
           precision=None, **unused):
    del precision, unused  # Float32 products, as lax's default on CPU.
    valid = padding == 'VALID' or all(tuple(p) == (0, 0) for p in padding)
    dilations = tuple(lhs_dilation or ()) + tuple(rhs_dilation or ())
    nhwc = dimension_numbers is None or tuple(
        dimension_numbers.lhs_spec) == (0, 3, 1, 2)
    if (not valid or any(s != 1 for s in window_strides) or not nhwc
        or any(d != 1 for d in dilations) or feature_group_count != 1):
      raise NotImplementedError(
          'the matmul lowering does only stride-1, VALID, undilated, NHWC '
          'convolutions')
    return conv_valid(lhs, rhs, input_grad)

  return conv


def _patches_chwn(x: jax.Array, kh: int, kw: int) -> jax.Array:
  """(C, H, W, N) -> (kh*kw*C + 1, OH*OW*N): rows in HWIO-reshape order, ones.

  The last row is ones, so that the product with the kernel and bias stacked
  as one (kh*kw*C + 1, Cout) matrix adds the bias, and the weight gradient's
  product yields the bias gradient too, without a pass of its own. With the
  batch minor, every slice copies runs of whole images' columns (OW*N floats).
  """
  c, h, w, n = x.shape
  oh, ow = h - kh + 1, w - kw + 1
  # Column shifts first, then row shifts of those: XLA fuses x's producer (a
  # pooling) into each slice that reads x, so kw slices compute it kw times,
  # where kh*kw slices of x would compute it kh*kw times.
  columns = jnp.stack([x[:, :, j:j + ow] for j in range(kw)])
  rows = jnp.stack([columns[:, :, i:i + oh] for i in range(kh)])
  return jnp.concatenate(
      [rows.reshape(kh * kw * c, oh * ow * n),
       jnp.ones((1, oh * ow * n), x.dtype)], axis=0)


def _col2im_chwn(patch_grads: jax.Array, kh: int, kw: int,
                 shape: tuple[int, ...]) -> jax.Array:
  """Adjoint of `_patches_chwn` less its ones: (kh*kw*C, OH*OW*N) -> shape."""
  c, h, w, n = shape
  oh, ow = h - kh + 1, w - kw + 1
  patch_grads = patch_grads.reshape(kh, kw, c, oh, ow, n)
  rows = []
  for i in range(kh):
    row = sum(jnp.pad(patch_grads[i, j],
                      ((0, 0), (0, 0), (j, w - ow - j), (0, 0)))
              for j in range(kw))
    rows.append(jnp.pad(row, ((0, 0), (i, h - oh - i), (0, 0), (0, 0))))
  return jnp.stack(rows).sum(axis=0)  # One reduction, as in `_col2im`.


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv_chwn(x: jax.Array, kernel: jax.Array, bias: jax.Array,
               input_grad: bool) -> jax.Array:
  return _conv_chwn_fwd(x, kernel, bias, input_grad)[0]


def _conv_chwn_fwd(x, kernel, bias, input_grad):
  del input_grad
  kh, kw, cin, cout = kernel.shape
  _, h, w, n = x.shape
  patches = _patches_chwn(x, kh, kw)
  weights = jnp.concatenate([kernel.reshape(kh * kw * cin, cout),
                             bias[None]], axis=0)
  out = jnp.transpose(weights) @ patches
  return (out.reshape(cout, h - kh + 1, w - kw + 1, n),
          (patches, kernel, x.shape))


def _conv_chwn_bwd(input_grad, residuals, out_grad):
  patches, kernel, x_shape = residuals
  kh, kw, cin, cout = kernel.shape
  out_grad = out_grad.reshape(cout, -1)
  # (K + 1, M) x (Cout, M) -> (K + 1, Cout): the kernel's and bias' gradients.
  weight_grads = lax.dot_general(patches, out_grad, (((1,), (1,)), ((), ())))
  kernel_grad = weight_grads[:-1].reshape(kernel.shape)
  bias_grad = weight_grads[-1]
  if not input_grad:
    return jnp.zeros(x_shape, out_grad.dtype), kernel_grad, bias_grad
  patch_grads = kernel.reshape(kh * kw * cin, cout) @ out_grad
  return (_col2im_chwn(patch_grads, kh, kw, x_shape), kernel_grad,
          bias_grad)


_conv_chwn.defvjp(_conv_chwn_fwd, _conv_chwn_bwd)


def conv_valid_chwn(x: jax.Array, kernel: jax.Array, bias: jax.Array,
                    input_grad: bool = True) -> jax.Array:
  """`conv_valid` plus bias with the batch minor: (C, H, W, N) in and out.

  The kernel stays HWIO, the bias is (Cout,). Every product is one GEMM whose
  long side is OH*OW*N, and the patch matrix is built from runs of OW*N
  contiguous floats, which at batch sizes above 1 beats `conv_valid`'s NHWC
  patches (a concatenation along the minor axis, strided writes of C floats
  each).
  """
  return _conv_chwn(x, kernel, bias, input_grad)


@jax.custom_vjp
def _pool_chwn(x: jax.Array) -> jax.Array:
  return _pool_chwn_fwd(x)[0]


def _pool_chwn_fwd(x):
  corners = [x[:, i::2, j::2] for i in (0, 1) for j in (0, 1)]
  # `max_pool_2x2`'s scan: the index of the element its gradient goes to.
  picked, index = corners[0], jnp.zeros(corners[0].shape, jnp.int32)
  for k in (1, 2, 3):
    later_is_taken = ~(picked >= corners[k])
    picked = jnp.where(later_is_taken, corners[k], picked)
    index = jnp.where(later_is_taken, k, index)
  # The value: the window's maximum, NaN if it holds one (`lax.max`
  # propagates NaN). A reduction, which XLA computes once; an elementwise
  # form would be fused into, and recomputed by, each of the next
  # convolution's kh*kw patch slices.
  return jnp.stack(corners).max(axis=0), index


def _pool_chwn_bwd(index, out_grad):
  zero = jnp.zeros_like(out_grad)
  rows = [jnp.stack([jnp.where(index == 2 * i + j, out_grad, zero)
                     for j in (0, 1)], axis=-2) for i in (0, 1)]
  c, h, w, n = out_grad.shape
  return (jnp.stack(rows, axis=2).reshape(c, 2 * h, 2 * w, n),)


_pool_chwn.defvjp(_pool_chwn_fwd, _pool_chwn_bwd)


def max_pool_2x2_chwn(x: jax.Array) -> jax.Array:
  """`max_pool_2x2` of (C, H, W, N) `x`: the same values and gradient.

  A hand-written gradient: each output's gradient goes to the window
  element `max_pool_2x2`'s scan picks, written in one pass over the
  corners, strided in H and W and contiguous along the batch.
  """
  h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  return _pool_chwn(x[:, :h, :w])


class ConvCHWN(nn.Module):
  """`nn.Conv` (stride 1, 'VALID', HWIO kernel, bias) on (C, H, W, N) inputs.

  Its parameters are `nn.Conv`'s, same names, shapes and initialisation, so
  a model can switch layouts without changing its parameters.
  """
  features: int
  kernel_size: tuple[int, int]
  kernel_init: nn.initializers.Initializer
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  input_grad: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init,
                        self.kernel_size + (x.shape[0], self.features),
                        jnp.float32)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
    return conv_valid_chwn(x, kernel, bias, self.input_grad)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2, stride-2 max-pooling of NHWC `x`.

  Forward and gradient equal `nn.max_pool(x, (2, 2), strides=(2, 2))`'s, NaN
  and infinities included, so a divergence shows its first NaN. The gradient
  goes where XLA's select-and-scatter sends it: scanning the window in
  row-major order, it keeps the element picked so far while that is >= the
  next one, else takes the next. Without NaN that is the first maximum; as
  any comparison with NaN is false, a NaN is taken and so is the element after
  it. The pooled value is NaN wherever the window holds a NaN (`lax.max`
  propagates NaN), even where the gradient goes to a number. An odd last row
  or column is dropped, as 'VALID' pooling drops it.
  """
  n, h, w, c = x.shape
  h, w = h // 2 * 2, w // 2 * 2
  x = x[:, :h, :w]
  windows = x.reshape(n, h // 2, 2, w // 2, 2, c)
  corners = [lax.stop_gradient(windows[:, :, i, :, j]) for i in (0, 1)
             for j in (0, 1)]
  picked, index = corners[0], jnp.zeros(corners[0].shape, jnp.int32)
  for k in (1, 2, 3):
    later_is_taken = ~(picked >= corners[k])
    picked = jnp.where(later_is_taken, corners[k], picked)
    index = jnp.where(later_is_taken, k, index)
  position = (2 * lax.broadcasted_iota(jnp.int32, windows.shape, 2) +
              lax.broadcasted_iota(jnp.int32, windows.shape, 4))
  chosen = position == index[:, :, None, :, None, :]
  # The other elements add 0, or NaN where they are NaN, without a gradient.
  others = lax.stop_gradient(jnp.where(windows == windows, 0.0, windows))
  return jnp.where(chosen, windows, others).sum(axis=(2, 4))


def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75) -> jax.Array:
  """Caffe's across-channel LRN of NHWC `x` (AlexNet's defaults).

  x / (1 + alpha / size * sum of x^2 over the `size` channels centred on
  x's)^beta, the window cut off (zero) beyond the first and last channel.
  Note alpha / size: Caffe divides alpha by the window, TensorFlow does not.
  """
  before = (size - 1) // 2
  window_sums = lax.reduce_window(
      jnp.square(x), 0.0, lax.add, (1, 1, 1, size), (1, 1, 1, 1),
      ((0, 0), (0, 0), (0, 0), (before, size - 1 - before)))
  return x / (1.0 + alpha / size * window_sums) ** beta


def caffe_max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
  """Square max-pooling of NHWC `x` with Caffe's output size (no padding).

  Caffe rounds up, ceil((side - window) / stride) + 1 outputs per side, so a
  last window that runs past the edge is kept, cut to the pixels inside it
  (flax's 'VALID' pooling rounds down and drops it). Sides that the windows
  tile exactly pool alike in both.

  Raises:
    ValueError: a side has no window at all (Caffe's size would be 0).
  """
  padding = []
  for side in x.shape[1:3]:
    outputs = math.ceil((side - window) / stride) + 1
    if outputs < 1:
      raise ValueError(f'a side of {side} is too small to pool {window}x'
                       f'{window} with stride {stride}')
    padding.append((0, (outputs - 1) * stride + window - side))
  # Padded with -inf, which no maximum picks.
  return nn.max_pool(x, (window, window), strides=(stride, stride),
                     padding=padding)
