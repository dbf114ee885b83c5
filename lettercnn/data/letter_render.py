"""Synthetic engraved capital letters on weathered stone.

The tombstone photos the project was designed for are not public, so this
module paints a stand-in: one capital letter incised into a stone slab and
photographed. Every parameter of an image is drawn from the caller's rng, in
four stages:

1. Layout: the glyph in one of several serif and sans fonts (regular, bold,
   italic), sometimes with neighbouring characters of the inscription, mapped
   into the frame by a random perspective transform (scale, rotation, shear,
   tilt, off-centre crop).
2. Carving: the glyph mask, with eroded edges, becomes a height map (v-cut or
   flat-bottomed, from its distance transform, rounded by weathering), on a
   rough surface with pits and cracks.
3. Stone: an albedo texture (granite, marble, sandstone, slate, limestone),
   letters left plain, frosted or paint-filled, with lichen, moss, streaked
   stains and dirt in the grooves.
4. Photograph: Lambert shading with cast shadows under a random light, uneven
   illumination, exposure, white balance, contrast, blur, sensor noise and
   JPEG compression.
"""

from collections.abc import Sequence
import dataclasses
import functools
import io
import math
import os

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

LETTERS: tuple[str, ...] = ('A', 'B', 'C', 'E', 'H', 'N', 'O', 'R', 'S', 'T')
STORED_SIZE: int = 64

_FONT_SIZE = 64  # Glyphs are rasterised once at this size and cached.
_BANK_SIZE = 4 * STORED_SIZE  # Side of the noise textures images crop from.
_MAX_SHADOW = 16  # Pixels; longer shadows are cut short.
_FONT_FILES = (
    'DejaVuSans.ttf', 'DejaVuSans-Bold.ttf', 'DejaVuSans-Oblique.ttf',
    'DejaVuSans-BoldOblique.ttf', 'DejaVuSerif.ttf', 'DejaVuSerif-Bold.ttf',
    'DejaVuSerif-Italic.ttf', 'DejaVuSerif-BoldItalic.ttf', 'STIXGeneral.ttf',
    'STIXGeneralBol.ttf', 'STIXGeneralItalic.ttf', 'STIXGeneralBolIta.ttf',
    'cmr10.ttf', 'cmb10.ttf', 'cmti10.ttf', 'cmss10.ttf',
    'DejaVuSansMono-Bold.ttf')
# Characters that may flank the letter, as in a word or a date.
_NEIGHBOURS = 'ABCDEFGHIJKLMNOPRSTUVWY0123456789'

_GRANITE = ((0.55, 0.55, 0.56), (0.66, 0.54, 0.51), (0.13, 0.13, 0.14),
            (0.36, 0.39, 0.44), (0.47, 0.31, 0.28))
_MARBLE = ((0.88, 0.88, 0.86), (0.86, 0.83, 0.74), (0.72, 0.73, 0.73))
_SANDSTONE = ((0.74, 0.62, 0.44), (0.63, 0.41, 0.31), (0.70, 0.67, 0.56))
_SLATE = ((0.26, 0.28, 0.31), (0.31, 0.31, 0.29), (0.22, 0.26, 0.29))
_LIMESTONE = ((0.77, 0.74, 0.67), (0.70, 0.70, 0.68))
_PAINTS = ((0.05, 0.05, 0.05), (0.80, 0.64, 0.28), (0.92, 0.92, 0.90),
           (0.42, 0.43, 0.45))
_LICHENS = ((0.72, 0.76, 0.66), (0.80, 0.66, 0.30), (0.88, 0.88, 0.83),
            (0.36, 0.42, 0.30))
_MOSS = (0.24, 0.34, 0.12)
_STAINS = ((0.45, 0.30, 0.17), (0.10, 0.11, 0.09))


@dataclasses.dataclass(frozen=True)
class _Glyph:
  """A rasterised character: coverage in its ink box, placed from the pen."""
  coverage: np.ndarray  # uint8 [height, width], tight around the ink.
  left: int  # Ink box offset from the pen position on the baseline.
  top: int
  advance: float


@functools.lru_cache(maxsize=None)
def _font(name: str) -> ImageFont.FreeTypeFont:
  """A font shipped with matplotlib, at _FONT_SIZE."""
  path = os.path.join(matplotlib.get_data_path(), 'fonts', 'ttf', name)
  return ImageFont.truetype(path, _FONT_SIZE)


@functools.lru_cache(maxsize=None)
def _glyph(font_name: str, char: str) -> _Glyph:
  """`char` rasterised in `font_name`, cropped to its ink."""
  font = _font(font_name)
  left, top, right, bottom = font.getbbox(char, anchor='ls')
  image = Image.new('L', (right - left + 2, bottom - top + 2))
  ImageDraw.Draw(image).text((1 - left, 1 - top), char, fill=255, font=font,
                             anchor='ls')
  coverage = np.asarray(image)
  rows = np.flatnonzero(coverage.any(axis=1))
  cols = np.flatnonzero(coverage.any(axis=0))
  return _Glyph(
      coverage=coverage[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].copy(),
      left=left - 1 + cols[0], top=top - 1 + rows[0],
      advance=font.getlength(char))


@functools.lru_cache(maxsize=None)
def _noise_bank(cells: tuple[int, int], octaves: int) -> np.ndarray:
  """A fixed noise texture, four frames wide, that images crop from.

  Interpolating fresh noise for every image would dominate the rendering
  time; random crops of one deterministic texture are as varied and cheap.

  Args:
    cells: random values per frame, (rows, columns); (0, 0) for white noise.
    octaves: for smooth noise, the number of octaves, each twice as fine and
      half as strong as the one before.
  """
  rng = np.random.default_rng([*cells, octaves])
  if cells == (0, 0):
    bank = rng.standard_normal((_BANK_SIZE, _BANK_SIZE)).astype(np.float32)
  else:
    bank = np.zeros((_BANK_SIZE, _BANK_SIZE), np.float32)
    for octave in range(octaves):
      grid_shape = [4 * cell * 2**octave + 1 for cell in cells]
      grid = rng.standard_normal(grid_shape).astype(np.float32)
      bank += 0.5**octave * np.asarray(Image.fromarray(grid).resize(
          (_BANK_SIZE, _BANK_SIZE), Image.Resampling.BICUBIC))
  bank.setflags(write=False)
  return bank


def _crop(bank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A random frame-sized, randomly mirrored, read-only view of `bank`."""
  end = _BANK_SIZE - STORED_SIZE
  corner, flips = divmod(int(rng.integers(4 * end * end)), 4)
  y, x = divmod(corner, end)
  frame = bank[y:y + STORED_SIZE, x:x + STORED_SIZE]
  return frame[::1 - (flips & 2), ::1 - 2 * (flips & 1)]


def _noise(rng: np.random.Generator, cells: int | tuple[int, int],
           octaves: int = 1) -> np.ndarray:
  """Smooth noise of about unit scale, with `cells` random values per side."""
  cells = (cells, cells) if isinstance(cells, int) else cells
  return _crop(_noise_bank(cells, octaves), rng)


def _white(rng: np.random.Generator) -> np.ndarray:
  """Independent standard normal values per pixel."""
  return _crop(_noise_bank((0, 0), 0), rng)


@functools.lru_cache(maxsize=None)
def _coords() -> tuple[np.ndarray, np.ndarray]:
  """Pixel coordinates (x, y) of the frame, in [-1, 1]."""
  axis = np.linspace(-1, 1, STORED_SIZE, dtype=np.float32)
  x, y = np.meshgrid(axis, axis)
  x.setflags(write=False)
  y.setflags(write=False)
  return x, y


def _choice(rng: np.random.Generator,
            options: Sequence[tuple[float, ...]]) -> np.ndarray:
  """One of `options`, uniformly, as a float32 array."""
  return np.asarray(options[rng.integers(len(options))], np.float32)


# Layout.


def _stamp(canvas: np.ndarray, glyph: _Glyph, pen_x: float,
           baseline: float) -> None:
  """Draws `glyph` into `canvas` (in place), clipped at the canvas border."""
  x, y = round(pen_x + glyph.left), round(baseline + glyph.top)
  height, width = glyph.coverage.shape
  x0, y0 = max(x, 0), max(y, 0)
  x1 = min(x + width, canvas.shape[1])
  y1 = min(y + height, canvas.shape[0])
  if x1 <= x0 or y1 <= y0:
    return
  region = canvas[y0:y1, x0:x1]
  np.maximum(region, glyph.coverage[y0 - y:y1 - y, x0 - x:x1 - x], out=region)


def _inscription(letter: str, rng: np.random.Generator) -> np.ndarray:
  """A canvas with `letter` centred, maybe between neighbours in its font."""
  font_name = _FONT_FILES[rng.integers(len(_FONT_FILES))]
  glyph = _glyph(font_name, letter)
  canvas = np.zeros((2 * _FONT_SIZE, 4 * _FONT_SIZE), np.uint8)
  height, width = glyph.coverage.shape
  pen_x = canvas.shape[1] / 2 - glyph.left - width / 2
  baseline = canvas.shape[0] / 2 - glyph.top - height / 2
  _stamp(canvas, glyph, pen_x, baseline)
  spacing = rng.uniform(0.05, 0.5) * _FONT_SIZE
  if rng.random() < 0.4:
    left = _glyph(font_name, _NEIGHBOURS[rng.integers(len(_NEIGHBOURS))])
    _stamp(canvas, left, pen_x - spacing - left.advance, baseline)
  if rng.random() < 0.4:
    right = _glyph(font_name, _NEIGHBOURS[rng.integers(len(_NEIGHBOURS))])
    _stamp(canvas, right, pen_x + glyph.advance + spacing, baseline)
  return canvas


# Standard deviations and limits of the view: rotation (radians), shear,
# log horizontal stretch, shift and perspective tilt (in half frames).
_VIEW_SPREAD = np.array([0.08, 0.08, 0.1, 0.12, 0.12, 0.1, 0.1])
_VIEW_LIMIT = np.array([0.25, 0.2, 0.3, 0.25, 0.25, 0.25, 0.25])


def _frame_transform(canvas_shape: tuple[int, ...],
                     rng: np.random.Generator) -> tuple[float, ...]:
  """PIL perspective coefficients mapping frame pixels to canvas pixels.

  The frame is centred near the canvas centre (the letter), which fills about
  40-70% of the frame height, seen rotated, sheared, stretched and tilted.
  """
  size = STORED_SIZE
  letter_height = rng.uniform(0.4, 0.7) * size
  scale = 0.72 * _FONT_SIZE / letter_height * size / 2  # Canvas px per unit.
  angle, shear, stretch, shift_x, shift_y, tilt_x, tilt_y = np.clip(
      rng.normal(0, _VIEW_SPREAD), -_VIEW_LIMIT, _VIEW_LIMIT)
  cos, sin = math.cos(angle), math.sin(angle)
  linear = scale * np.array([[cos, -sin], [sin, cos]]) @ np.array(
      [[math.exp(stretch), shear], [0, 1]])
  to_unit = np.array([[2 / size, 0, -1 - shift_x],
                      [0, 2 / size, -1 - shift_y],
                      [0, 0, 1]])
  tilt = np.array([[1, 0, 0], [0, 1, 0], [tilt_x, tilt_y, 1]])
  to_canvas = np.array([[*linear[0], canvas_shape[1] / 2],
                        [*linear[1], canvas_shape[0] / 2],
                        [0, 0, 1]])
  matrix = to_canvas @ tilt @ to_unit
  return tuple((matrix / matrix[2, 2]).ravel()[:8])


def _glyph_mask(letter: str, rng: np.random.Generator) -> np.ndarray:
  """Ink coverage of the framed inscription, float32 in [0, 1]."""
  canvas = _inscription(letter, rng)
  framed = Image.fromarray(canvas).transform(
      (STORED_SIZE, STORED_SIZE), Image.Transform.PERSPECTIVE,
      _frame_transform(canvas.shape, rng), Image.Resampling.BILINEAR)
  return np.asarray(framed, np.float32) / 255


# Carving.


def _groove(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Boolean cut region: the glyph with edges eroded and chipped."""
  blurred = ndimage.gaussian_filter(mask, rng.uniform(0.5, 1))
  roughness = rng.uniform(0.03, 0.2) * _noise(rng, 32)
  chips = rng.uniform(0, 0.15) * np.maximum(_noise(rng, 12), 0)
  near_edge = np.minimum(4 * blurred, 1)
  return blurred + near_edge * (roughness + chips) > 0.5


def _depth(groove: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Depth below the surface in pixels: v-cut or flat-bottomed, worn round."""
  distance = ndimage.distance_transform_edt(groove).astype(np.float32)
  if rng.random() < 0.3:
    distance = np.minimum(distance, rng.uniform(1.5, 3))  # Flat bottom.
  depth = rng.uniform(0.6, 1.4) * distance
  return ndimage.gaussian_filter(depth, rng.uniform(0.5, 1.2))


def _crack(rng: np.random.Generator) -> np.ndarray:
  """Coverage of a wandering crack across the frame, float32 in [0, 1]."""
  image = Image.new('L', (STORED_SIZE, STORED_SIZE))
  angle = rng.uniform(0, 2 * math.pi)
  point = rng.uniform(0, STORED_SIZE, size=2)
  points = [tuple(point)]
  for _ in range(int(rng.integers(3, 10))):
    angle += rng.normal(0, 0.4)
    point = point + 8 * np.array([math.cos(angle), math.sin(angle)])
    points.append(tuple(point))
  ImageDraw.Draw(image).line(points, fill=255, width=int(rng.integers(1, 3)))
  return np.asarray(image, np.float32) / 255


def _surface(rng: np.random.Generator) -> np.ndarray:
  """Height of the stone face around the letters: bumps and pits."""
  bumps = rng.uniform(0.03, 0.25) * _noise(rng, 6, 3)
  pits = _white(rng) > rng.uniform(2, 3.5)
  return bumps - rng.uniform(0.5, 2) * ndimage.uniform_filter(
      pits.astype(np.float32), 2)


# Stone.


def _granite(rng: np.random.Generator) -> np.ndarray:
  """Speckled: dark and light crystals over a mottled base."""
  base = _choice(rng, _GRANITE) * (1 + 0.08 * _noise(rng, 4))[..., None]
  crystals = _noise(rng, STORED_SIZE // 2) + 0.5 * _white(rng)
  dark = (crystals < rng.uniform(-1.8, -1.1))[..., None]
  light = (crystals > rng.uniform(1.3, 2))[..., None]
  speckle = 1 + 0.06 * _white(rng)[..., None]
  stone = np.where(dark, base * 0.45, base * speckle)
  return np.where(light, 0.6 * stone + 0.35, stone)


def _marble(rng: np.random.Generator) -> np.ndarray:
  """Pale, cloudy, with a few turbulent veins that fade in and out."""
  x, y = _coords()
  angle = rng.uniform(0, math.pi)
  phase = (x * math.cos(angle) + y * math.sin(angle)) * rng.uniform(1, 3)
  turbulence = rng.uniform(0.5, 1.5) * _noise(rng, 2, 2)
  ridge = 1 - np.abs(np.sin(phase + turbulence))
  fading = np.clip(_noise(rng, 2) + 0.7, 0, 1)
  veins = fading * (ridge**rng.uniform(10, 40) + 0.4 * ridge**3)
  shade = 1 + 0.05 * _noise(rng, 5) - rng.uniform(0.2, 0.5) * veins
  return _choice(rng, _MARBLE) * shade[..., None]


def _sandstone(rng: np.random.Generator) -> np.ndarray:
  """Warm, grainy, with bedding bands and weathered patches."""
  _, y = _coords()
  bands = np.sin(y * rng.uniform(5, 20) + _noise(rng, 3))
  grain = _white(rng)
  shade = 1 + 0.07 * bands + 0.07 * grain + 0.12 * _noise(rng, 4, 2)
  return _choice(rng, _SANDSTONE) * shade[..., None]


def _slate(rng: np.random.Generator) -> np.ndarray:
  """Dark, smooth, with faint laminations."""
  laminae = _noise(rng, (24, 2))
  shade = 1 + 0.06 * laminae + 0.03 * _white(rng)
  return _choice(rng, _SLATE) * shade[..., None]


def _limestone(rng: np.random.Generator) -> np.ndarray:
  """Light, with fossil specks and black crusts."""
  specks = _white(rng)
  crust = np.clip(_noise(rng, 5, 3) - rng.uniform(0.5, 1.5), 0, 1)
  shade = 1 + 0.06 * specks - rng.uniform(0.1, 0.3) * crust
  return _choice(rng, _LIMESTONE) * shade[..., None]


_STONES = (_granite, _marble, _sandstone, _slate, _limestone)


def _letter_finish(stone: np.ndarray, depth: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
  """Albedo with the grooves left plain, frosted, or filled with paint.

  As on real stones, the finish contrasts with the stone: light stone has its
  letters dirty or painted, dark stone (polished granite, slate) has them cut
  rough, which looks pale, or painted a light colour.
  """
  brightness = float(stone.mean())
  if rng.random() < 0.6:
    if brightness > 0.45:
      inside = stone * rng.uniform(0.45, 0.8)
    else:
      inside = stone + rng.uniform(0.3, 0.6) * (0.85 - stone)
  else:
    paints = [paint for paint in _PAINTS
              if abs(np.mean(paint) - brightness) > 0.3]
    flaking = _noise(rng, 16) > rng.uniform(-2.5, -0.8)
    inside = np.where(flaking[..., None], _choice(rng, paints), stone)
  groove = np.minimum(depth, 1)[..., None]
  return stone + groove * (inside - stone)


def _lichen(albedo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Blotches of lichen: soft-edged colonies with a granular texture."""
  colonies = _noise(rng, int(rng.integers(6, 14)), 3)
  cover = np.clip((colonies - rng.uniform(1.2, 1.9)) * 4, 0, 1)
  texture = 1 + 0.15 * _white(rng)
  colour = _choice(rng, _LICHENS) * texture[..., None]
  return albedo + (rng.uniform(0.6, 0.95) * cover)[..., None] * (
      colour - albedo)


def _moss(albedo: np.ndarray, depth: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
  """Moss in patches of the grooves and creeping up from the bottom."""
  _, y = _coords()
  patches = _noise(rng, 6, 2)
  patchy = np.clip(patches + 0.3, 0, 1)
  in_grooves = np.minimum(depth, 1) * patchy
  from_bottom = np.clip(2 * (y - 0.2), 0, 1) * patchy
  cover = rng.uniform(0.5, 0.9) * np.minimum(in_grooves + from_bottom, 1)
  colour = np.asarray(_MOSS, np.float32) * (1 + 0.25 * _white(rng))[..., None]
  return albedo + cover[..., None] * (colour - albedo)


def _stains(albedo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Vertical streaks of run-off, darkest at the top."""
  _, y = _coords()
  streaks = np.maximum(_noise(rng, (2, int(rng.integers(12, 24)))) - 0.5, 0)
  strength = rng.uniform(0.15, 0.5) * streaks * (1.2 - 0.5 * (y + 1))
  cover = np.clip(strength, 0, 0.5)[..., None]
  return albedo + cover * (_choice(rng, _STAINS) - albedo)


def _albedo(depth: np.ndarray, crack: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
  """Colour of the carved stone before lighting, float32 [H, W, 3]."""
  stone = _STONES[rng.integers(len(_STONES))](rng).astype(np.float32)
  albedo = _letter_finish(stone, depth, rng)
  if rng.random() < 0.4:
    albedo = _stains(albedo, rng)
  if rng.random() < 0.5:
    albedo = _lichen(albedo, rng)
  if rng.random() < 0.2:
    albedo = _moss(albedo, depth, rng)
  grime = 1 - rng.uniform(0, 0.1) * np.minimum(depth, 4) - 0.3 * crack
  return albedo * grime[..., None]


# Photograph.


def _cast_shadow(height: np.ndarray, azimuth: float,
                 elevation: float) -> np.ndarray:
  """1 where the light reaches the height map, 0 in shadow (softened).

  Marches from every pixel towards the light, in whole-pixel steps, looking
  for a point higher than the ray; beyond the frame nothing casts shadows.
  """
  rise = math.tan(elevation)
  reach = min(float(height.max() - height.min()) / rise, _MAX_SHADOW)
  pad = _MAX_SHADOW + 1
  size = height.shape[0]
  padded = np.full((size + 2 * pad,) * 2, -np.inf, np.float32)
  padded[pad:-pad, pad:-pad] = height
  lit = np.ones(height.shape, bool)
  for step in range(1, math.floor(reach) + 1):
    y = pad + round(step * math.sin(azimuth))
    x = pad + round(step * math.cos(azimuth))
    lit &= padded[y:y + size, x:x + size] <= height + step * rise
  return ndimage.gaussian_filter(lit.astype(np.float32), 0.6)


def _shading(height: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Irradiance of the height map, 1 for the flat surface in full light."""
  azimuth = rng.uniform(0, 2 * math.pi)
  elevation = rng.uniform(math.radians(20), math.radians(60))
  light = np.array([math.cos(elevation) * math.cos(azimuth),
                    math.cos(elevation) * math.sin(azimuth),
                    math.sin(elevation)], np.float32)
  grad_y, grad_x = np.gradient(height)
  lambert = (light[2] - grad_x * light[0] - grad_y * light[1]) / np.sqrt(
      1 + grad_x**2 + grad_y**2)
  direct = np.maximum(lambert, 0) / light[2]
  direct *= _cast_shadow(height, azimuth, elevation)
  ambient = rng.uniform(0.2, 0.5)
  return ambient + (1 - ambient) * direct


def _illumination(rng: np.random.Generator) -> np.ndarray:
  """Uneven light over the frame: a gradient and dappled shade."""
  x, y = _coords()
  angle = rng.uniform(0, 2 * math.pi)
  gradient = rng.uniform(0, 0.3) * (x * math.cos(angle) + y * math.sin(angle))
  dapple = rng.uniform(0, 0.15) * _noise(rng, 3)
  return np.exp(gradient + dapple)


def _photograph(radiance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Exposure, white balance, gamma, contrast, blur and noise, to uint8.

  Exposure is partly automatic: it pulls the mean towards mid-grey, so that
  dark stone stays darker than light stone but neither clips.
  """
  exposure = (0.45 / radiance.mean())**0.7 * math.exp(rng.normal(0, 0.15))
  white_balance = np.exp(rng.normal(0, 0.06, size=3)).astype(np.float32)
  colour = radiance * (exposure * white_balance)
  colour = np.clip(colour, 0, 1)**math.exp(rng.normal(0, 0.15))
  mean = colour.mean()
  colour = mean + (colour - mean) * rng.uniform(0.7, 1.3)
  if rng.random() < 0.1:
    colour = np.repeat(colour.mean(axis=2, keepdims=True), 3, axis=2)
  if rng.random() < 0.6:
    sigma = rng.uniform(0.2, 0.9)
    colour = ndimage.gaussian_filter(colour, (sigma, sigma, 0))
  colour = colour + rng.uniform(0, 0.025) * _white(rng)[..., None]
  return np.clip(colour * 255 + 0.5, 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """`pixels` after a round trip through JPEG at a random quality."""
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG',
                               quality=int(rng.integers(20, 96)))
  return np.asarray(Image.open(buffer, formats=('JPEG',)))


def render_letter(letter: str, rng: np.random.Generator) -> np.ndarray:
  """One engraved letter on stone: uint8 RGB, (STORED_SIZE, STORED_SIZE, 3).

  Args:
    letter: the character to carve, normally one of LETTERS.
    rng: the only source of randomness; equal seeds give identical images.
  """
  groove = _groove(_glyph_mask(letter, rng), rng)
  depth = _depth(groove, rng)
  crack = _crack(rng) if rng.random() < 0.25 else np.zeros_like(depth)
  height = _surface(rng) - depth - rng.uniform(0.5, 1.5) * crack
  albedo = _albedo(depth, crack, rng)
  radiance = albedo * (_shading(height, rng) * _illumination(rng))[..., None]
  return _jpeg(_photograph(radiance, rng), rng)
