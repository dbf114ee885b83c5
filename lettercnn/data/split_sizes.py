"""How a generated dataset divides each class between training and validation.

Kept free of TensorFlow so that config checks can use it before it loads.
"""

from lettercnn import errors


def per_class(examples_per_class: int,
              validation_fraction: float) -> tuple[int, int]:
  """Returns the (training, validation) examples of each class.

  Raises:
    errors.InputError: a split would be empty, e.g. examples_per_class=2 with
      validation_fraction=0.25 holds out round(0.5) = 0 examples.
  """
  num_validation = int(round(examples_per_class * validation_fraction))
  num_train = examples_per_class - num_validation
  if num_train < 1 or num_validation < 1:
    raise errors.InputError(
        f'examples_per_class={examples_per_class} with validation_fraction='
        f'{validation_fraction} gives {num_train} training and '
        f'{num_validation} validation images per class; both need at least '
        '1, so raise examples_per_class or change validation_fraction')
  return num_train, num_validation
