"""DIGITS' TensorFlow backend: its LeNet, its plain "SGD", no weight decay.

Read as a diff against configs/default.py (DIGITS' Caffe defaults), whose
every other field it keeps. The study's TensorBoard curves and training
accuracy come from this backend; its momentum setup is the same with
`--config.optimizer=momentum` (TensorFlow's `A = mu*A + g; w -= lr*A`,
mu 0.9).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the TensorFlow-backend experiment configuration."""
  config = default.get_config()
  # ReLU after each convolution, dropout 0.5 before the last layer, Glorot.
  config.model = 'lenet_tf'
  # The form's default solver, tf.train.GradientDescentOptimizer.
  config.optimizer = 'sgd'
  config.momentum_form = 'tensorflow'
  # No weight decay term, no bias learning-rate multiplier.
  config.weight_decay_per_lr = 0.0
  config.bias_lr_mult = 1.0
  return config
