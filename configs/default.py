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
  # Seed of the data itself: tombstone_letters' images and a folder's
  # validation split. Apart from `seed` so that repeated seeds of a sweep
  # train on the same images.
  config.dataset_seed = 0

  # DIGITS' mean subtraction, computed once over the training split: 'none',
  # 'image' (the mean image) or 'pixel' (the mean of each channel).
  config.mean_subtraction = 'none'

  # --- Model -------------------------------------------------------------
  # Network from lettercnn.models.networks.MODELS: 'lenet' (DIGITS' Caffe LeNet),
  # 'lenet_tf' (its TensorFlow LeNet: ReLUs, dropout) or 'alexnet'.
  config.model = 'lenet'

  # --- Optimisation --------------------------------------------------------
  # Global batch size, split evenly over the devices used.
  config.batch_size = 1
  # Devices to train on (0 = all local devices).
  config.num_devices = 0
  # On CPU, JAX's host devices: a batch trains split over the most of them
  # it divides over with 64 images or more each (lettercnn.cpu_devices: at
  # batch 128, two; below, one), each core taking its share of the whole
  # step. Part of the arithmetic: how a batch is split decides how its
  # gradient is summed and so rounded.
  config.cpu_devices = 2
  # Passes over the training split.
  config.num_epochs = 30
  # Base learning rate (each configs/lr_*.py sets it).
  config.learning_rate = 1e-4
  # Solver, as DIGITS offers them (lettercnn.optim.optimizers): 'sgd', 'momentum',
  # 'nesterov', 'adagrad', 'rmsprop', 'adadelta' or 'adam'. DIGITS' Caffe
  # "SGD" is SGD with momentum 0.9: here 'momentum'.
  config.optimizer = 'momentum'
  # Whose momentum update: 'caffe' (V = mu*V + lr*g; w -= V, so a step-down of
  # the rate shrinks new steps only) or 'tensorflow' (A = mu*A + g; w -= lr*A).
  config.momentum_form = 'caffe'
  # Momentum of 'momentum' and 'nesterov' (DIGITS' default).
  config.momentum = 0.9
  # L2 weight decay as a multiple of the base learning rate (DIGITS' Caffe:
  # lr / 100; its TensorFlow backend has none).
  config.weight_decay_per_lr = 0.01
  # Learning-rate multiplier of the biases (DIGITS' Caffe LeNet: lr_mult 2).
  config.bias_lr_mult = 2.0

  # --- Learning-rate policy (DIGITS' seven; lettercnn.optim.schedules) -----------
  # 'fixed', 'step', 'multistep', 'exp', 'inv', 'poly' or 'sigmoid', with p the
  # percentage of training done: step lr*gamma^floor(p/step), multistep
  # lr*gamma^(steps passed), exp lr*gamma^p, inv lr*(1+gamma*p)^-power,
  # poly lr*(1-p/100)^power, sigmoid lr/(1+exp(gamma*(p-step))).
  config.lr_policy = 'step'
  # None: the chosen policy's DIGITS default (schedules.POLICY_DEFAULTS),
  # filled in once the overrides are applied; docs/configs.md has the rule.
  # gamma: the factor of 'step' (0.1), 'multistep' (0.5) and 'exp' (0.95),
  # the rate of 'inv' (0.1) and 'sigmoid' (0.1; positive decays).
  config.lr_decay_factor = ml_collections.config_dict.placeholder(float)
  # 'step' (33.3%: 10 of 30 epochs) and 'sigmoid' (50%): the step, in %.
  config.lr_step_percent = ml_collections.config_dict.placeholder(float)
  # 'multistep': where the rate steps down, in % of training (50, 85).
  config.lr_multistep_percents = ml_collections.config_dict.placeholder(tuple)
  # 'inv' (0.5) and 'poly' (3): the power.
  config.lr_power = ml_collections.config_dict.placeholder(float)
  # Seed for parameter initialisation, dropout and the order of the batches.
  config.seed = 0

  # --- Evaluation and logging ---------------------------------------------
  # Validation images per eval step (the last batch is padded and masked).
  config.eval_batch_size = 500
  # Training steps between train-metric scalars in TensorBoard.
  config.log_every_steps = 500
  # Epochs between checkpoints (the last epoch is always saved).
  config.checkpoint_every_epochs = 1

  # --- Sharpness (lettercnn.optim.sharpness) --------------------------------------
  # Training steps between measurements of the sharpness (the top Hessian
  # eigenvalue of the loss), logged as TensorBoard scalar `sharpness` beside
  # the stable-rate limit; 0: never (lettercnn.lr_find measures it at
  # initialisation regardless).
  config.sharpness_every_steps = 0
  # Training images (the split's first, whatever the seed) the loss is over.
  config.sharpness_examples = 1000
  # Power iteration stops once ||Hv - lambda v|| <= this x |lambda|: an
  # eigenvalue lies within this relative distance of the estimate.
  config.sharpness_tolerance = 1e-2
  # ... or after this many Hessian-vector products.
  config.sharpness_max_iterations = 100

  # --- LR range test (lettercnn.lr_find) -----------------------------------
  config.lr_find = ml_collections.ConfigDict()
  # The rate rises exponentially from min_lr to max_lr over num_steps steps.
  config.lr_find.min_lr = 1e-8
  config.lr_find.max_lr = 10.0
  # At batch size 1 each step's loss is one image's, and the moving average
  # lags ~50 steps: 5000 steps (555 a decade, about one epoch) keep the lag
  # under a tenth of a decade and the suggestions steady over seeds
  # (docs/lr_find.md, "The LR range test").
  config.lr_find.num_steps = 5000
  # Exponential moving average of the loss: avg = b avg + (1 - b) loss.
  config.lr_find.smoothing = 0.98
  # Stop once the smoothed loss passes this multiple of its minimum.
  config.lr_find.stop_factor = 4.0
  # Range tests from seeds seed, seed + 1, ...: the suggestions are their
  # medians, and their spread is printed.
  config.lr_find.seeds = 1

  # --- Convergence ---------------------------------------------------------
  # Stop as 'diverged' when the logged training loss exceeds this multiple of
  # the first logged loss (or is not finite).
  config.divergence_loss_factor = 5.0
  # A finished run whose final training accuracy is within this many
  # percentage points of chance is 'not_converged'.
  config.not_converged_margin_points = 5.0

  return config
