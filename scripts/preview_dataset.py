"""Renders a contact sheet of synthetic engraved letters, one row per letter.

Images come straight from `letter_render.render_letter`, seeded as the dataset
builder seeds them, so the sheet shows examples 0..per_letter-1 of each class:

  python scripts/preview_dataset.py --out docs/preview.png --per_letter 8
"""

import os
import sys

from absl import app
from absl import flags
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lettercnn.data import letter_render  # pylint: disable=g-import-not-at-top

_OUT = flags.DEFINE_string('out', 'docs/preview.png', 'PNG file to write.')
_PER_LETTER = flags.DEFINE_integer('per_letter', 8, 'Samples per letter.')
_SEED = flags.DEFINE_integer('seed', 0, 'Dataset seed, as in the builder.')
_SCALE = flags.DEFINE_integer('scale', 2, 'Integer upscaling of each image.')

_LABEL_WIDTH = 20
_GAP = 2


def contact_sheet(seed: int, per_letter: int, scale: int) -> Image.Image:
  """Grid of rendered examples, a labelled row per letter."""
  cell = letter_render.STORED_SIZE * scale + _GAP
  sheet = Image.new('RGB', (_LABEL_WIDTH + per_letter * cell,
                            len(letter_render.LETTERS) * cell), 'white')
  draw = ImageDraw.Draw(sheet)
  for row, letter in enumerate(letter_render.LETTERS):
    draw.text((_LABEL_WIDTH // 2, row * cell + cell // 2), letter, fill='black',
              anchor='mm')
    for column in range(per_letter):
      rng = np.random.default_rng([seed, row, column])
      image = Image.fromarray(letter_render.render_letter(letter, rng))
      if scale > 1:
        image = image.resize((image.width * scale, image.height * scale),
                             Image.Resampling.NEAREST)
      sheet.paste(image, (_LABEL_WIDTH + column * cell, row * cell))
  return sheet


def main(argv: list[str]) -> None:
  del argv  # Unused.
  sheet = contact_sheet(_SEED.value, _PER_LETTER.value, _SCALE.value)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  # A 256-colour palette keeps the noisy, textured sheet small on disk.
  palette = sheet.quantize(256, method=Image.Quantize.FASTOCTREE)
  palette.save(_OUT.value, optimize=True)


if __name__ == '__main__':
  app.run(main)
