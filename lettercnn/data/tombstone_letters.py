"""TFDS builder `tombstone_letters`: the generated stand-in for the study's photos.

Each example is one letter rendered by `letter_render.render_letter` from a
random generator seeded by (seed, class, example), so a dataset is a pure
function of its builder config. The split is stratified: the last
`round(examples_per_class * validation_fraction)` examples of every class go
to validation.
"""

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from lettercnn.data import letter_render
from lettercnn.data import splits


@dataclasses.dataclass
class TombstoneLettersConfig(tfds.core.BuilderConfig):
  """Generation parameters; `name` must encode them (see `config_for`)."""
  examples_per_class: int = 700
  validation_fraction: float = 0.25
  seed: int = 0

  @property
  def num_validation_per_class(self) -> int:
    return splits.per_class(self.examples_per_class,
                                 self.validation_fraction)[1]


def config_for(examples_per_class: int, validation_fraction: float,
               seed: int) -> TombstoneLettersConfig:
  """Returns the builder config (cached under its own name) for these values.

  Raises:
    errors.InputError: the values leave a split empty
      (`splits.per_class`).
  """
  splits.per_class(examples_per_class, validation_fraction)
  return TombstoneLettersConfig(
      name=f'n{examples_per_class}_val{validation_fraction:g}_seed{seed}',
      description=(f'{examples_per_class} images per letter, '
                   f'{validation_fraction:g} held out, seed {seed}.'),
      examples_per_class=examples_per_class,
      validation_fraction=validation_fraction,
      seed=seed)


class TombstoneLetters(tfds.core.GeneratorBasedBuilder):
  """Capital letters engraved in weathered gravestones, generated."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Engraved-stone renderer, 64x64 RGB.'}

  def _info(self) -> tfds.core.DatasetInfo:
    size = letter_render.STORED_SIZE
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3)),
            'label': tfds.features.ClassLabel(names=letter_render.LETTERS),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: every image is generated.
    return {
        'train': self._generate_examples(is_validation=False),
        'validation': self._generate_examples(is_validation=True),
    }

  def _generate_examples(self, is_validation: bool):
    config = self.builder_config
    num_train = config.examples_per_class - config.num_validation_per_class
    indices = (range(num_train, config.examples_per_class)
               if is_validation else range(num_train))
    for label, letter in enumerate(letter_render.LETTERS):
      for index in indices:
        rng = np.random.default_rng([config.seed, label, index])
        yield f'{letter}_{index:05d}', {
            'image': letter_render.render_letter(letter, rng),
            'label': label,
        }


def dataset_dir(data_dir: str, config: TombstoneLettersConfig) -> str:
  """The folder TFDS keeps the dataset of `config` in, under `data_dir`.

  Known without making a builder, which reads the dataset_info.json there
  and raises if that is garbled: the folder is then to be rebuilt.
  """
  return os.path.join(data_dir, TombstoneLetters.name, config.name,
                      str(TombstoneLetters.VERSION))
