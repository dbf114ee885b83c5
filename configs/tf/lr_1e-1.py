"""DIGITS TensorFlow LeNet sweep point: base learning rate 1e-1."""

import ml_collections

from configs.tf import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.learning_rate = 1e-1
  return config
