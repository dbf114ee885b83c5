"""Default experiment: DIGITS' LeNet on the generated tombstone letters.

Every other config file imports this one and overrides a few fields, so the
whole experiment can be read here. Override any field on the command line with
`--config.FIELD=VALUE`; an unknown field is an error (the config is locked).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default experiment configuration."""
  config = ml_collections.ConfigDict()

  # --- Data --------------------------------------------------------------
  # 'tombstone_letters' (generated stand-in), a folder path, or a TFDS name.
  config.dataset = 'tombstone_letters'
  # Images generated per letter class (tombstone_letters only).
  config.examples_per_class = 700
  # Fraction of each class held out for validation.
  config.validation_fraction = 0.25
  # Side in pixels of the square images fed to the model.
  config.image_size = 28
  # Where TFDS builds and caches datasets (None: TFDS' default, ~/tensorflow_datasets).
  config.data_dir = ml_collections.config_dict.placeholder(str)
  # Feed the model one grey channel (True, as DIGITS' LeNet) or three colour ones.
  config.grayscale = True
  # Folder datasets: a separate folder of validation images (None: split `dataset`).
  config.validation_dataset = ml_collections.config_dict.placeholder(str)
  # Folder datasets: skip and count corrupt images instead of stopping the build.
  config.skip_corrupt_images = False

  # --- Model -------------------------------------------------------------
  # Network from lettercnn.models.MODELS.
  config.model = 'lenet'

  # --- Optimisation --------------------------------------------------------
  # Global batch size, split evenly over the devices used.
  config.batch_size = 1
  # Devices to train on (0 = all local devices).
  config.num_devices = 0
  # Passes over the training split.
  config.num_epochs = 30
  # Base learning rate of SGD with momentum (each configs/lr_*.py sets it).
  config.learning_rate = 1e-4
  # Factor the learning rate is multiplied by at each decay boundary.
  config.lr_decay_factor = 0.1
  # Epochs between learning-rate decays (DIGITS' "step down" every 33%).
  config.lr_decay_every_epochs = 10
  # SGD momentum (DIGITS' default).
  config.momentum = 0.9
  # L2 weight decay as a multiple of the base learning rate (DIGITS: lr / 100).
  config.weight_decay_per_lr = 0.01
  # Seed for parameter initialisation, data generation and shuffling.
  config.seed = 0

  # --- Evaluation and logging ---------------------------------------------
  # Validation images per eval step (the last batch is padded and masked).
  config.eval_batch_size = 500
  # Training steps between train-metric scalars in TensorBoard.
  config.log_every_steps = 500
  # Epochs between checkpoints (the last epoch is always saved).
  config.checkpoint_every_epochs = 1

  # --- Convergence ---------------------------------------------------------
  # Stop as 'diverged' when the logged training loss exceeds this multiple of
  # the first logged loss (or is not finite).
  config.divergence_loss_factor = 5.0
  # A finished run whose final training accuracy is within this many
  # percentage points of chance is 'not_converged'.
  config.not_converged_margin_points = 5.0

  return config
