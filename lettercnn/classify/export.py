"""Writes a run's validation (or training) split as a labelled folder of PNGs.

  python -m lettercnn.classify.export --workdir=RUN --out=DIR [--split=validation]

DIR receives one subfolder per class (DIGITS' layout) holding the split's
images as the run's dataset stores them, losslessly: a generated or TFDS
dataset's own pixels (64x64 RGB for tombstone_letters), a folder dataset's
decoded and squashed images. `lettercnn.classify` decodes them back to the
same pixels, so classifying DIR with the run reproduces its evaluation; for
the validation split, exactly the accuracy in its status.json.

The split is read with the run's config from its status.json, through the
input pipeline's own loader; nothing in the workdir is written.
"""

import os

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np
from PIL import Image

from lettercnn import config_loading
from lettercnn import errors
from lettercnn.data import input_pipeline
from lettercnn.classify import report as classify_report
from lettercnn.run import status as run_status
from lettercnn.data import splits

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined only when run as a command, like lettercnn.classify's."""
  flags.DEFINE_string('workdir', None, 'The run whose data to export.')
  flags.DEFINE_string('out', None, 'A new or empty folder for the images.')
  flags.DEFINE_enum('split', 'validation', ['validation', 'train'],
                    'Which split.')
  flags.mark_flags_as_required(['workdir', 'out'])


def _run_config(workdir: str) -> ml_collections.ConfigDict:
  status = run_status.read(workdir)
  if status is None:
    raise errors.InputError(f'workdir {workdir} has no '
                            f'{run_status.STATUS_FILE}, so no run to export')
  return ml_collections.ConfigDict(status['config'])


def write_split(source: splits.Splits, split: str, out: str) -> int:
  """Writes `split` of `source` into `out`; returns the number of images."""
  names = source.class_names
  for name in names:
    os.makedirs(os.path.join(out, name), exist_ok=True)
  count = 0
  for count, example in enumerate(
      getattr(source, split).as_numpy_iterator(), start=1):
    image = np.asarray(example['image'], np.uint8)
    name = names[int(example['label'])]
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        os.path.join(out, name, f'{split}_{count:05d}.png'))
  return count


def export(workdir: str, out: str, split: str = 'validation') -> int:
  """Writes the run's `split` into `out`; returns how many images it wrote.

  Raises:
    errors.InputError: no run in `workdir`, `out` inside it or not new or
      empty, or the dataset does not load.
  """
  config = _run_config(workdir)
  classify_report.check_fresh(out, workdir)
  count = input_pipeline.load_splits(
      config, lambda source: write_split(source, split, out))
  logging.info('Wrote %d %s images of %s into %s.', count, split,
               config.dataset, out)
  return count


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}',
                         exitcode=errors.BAD_INPUT)
  try:
    count = export(FLAGS.workdir, FLAGS.out, FLAGS.split)
  except errors.InputError as e:
    errors.fail('export_split', e)
  print(f'{count} {FLAGS.split} images in {FLAGS.out}')


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=config_loading.flags_parser('export_split'))
