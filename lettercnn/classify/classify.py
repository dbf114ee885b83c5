"""Classifies images with a trained run.

  python -m lettercnn.classify --workdir=RUN PATH...
      [--checkpoint=best|last|STEP] [--top_k=5] [--out=DIR] [--skip_bad]

PATH is an image file or a folder; a folder with class subfolders (DIGITS'
layout) is labelled, and gets accuracies, per-class metrics, the confusion
matrix and a sheet of the most confident mistakes (`classify_report` lists
the files). Images go through the run's own preprocessing (`run_inputs`),
batched, so a run's validation images classify exactly as its evaluation
did. Nothing in the workdir is written or changed: results go to --out, by
default a new folder classified/<run>-<checkpoint>-<time> here.

Bad input is one line `classify: error: ...` and exit status 2, checked
before any compute where it can be: a workdir without the checkpoint asked
for, a model this code lacks, class folders the model does not know, and
(when decoding) an unreadable image, which --skip_bad skips and counts.
"""

import os
import pathlib
import time
from collections.abc import Sequence

from absl import flags
from absl import logging
import jax
import numpy as np

from lettercnn.classify import inputs as classify_inputs
from lettercnn.classify import report as classify_report
from lettercnn import distributed
from lettercnn import errors
from lettercnn.classify import trained_model

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the command's flags.

  Only when it runs as one, so that modules with flags of the same names
  (export_split, main) can be imported side by side, as the tests do.
  """
  flags.DEFINE_string('workdir', None, 'The run to classify with.')
  flags.DEFINE_string(
      'checkpoint', trained_model.LAST,
      'best (the best validation accuracy), last (the newest) or a step.')
  flags.DEFINE_integer('top_k', 5, 'Classes shown per image.')
  flags.DEFINE_string(
      'out', None, 'A new or empty folder for the results, outside the '
      'workdir (default: classified/<run>-<checkpoint>-<time>).')
  flags.DEFINE_bool('skip_bad', False,
                    'Skip and count unreadable images instead of stopping.')
  flags.DEFINE_integer(
      'batch_size', 0, 'Images per model call (0: the run\'s eval_batch_size, '
      'the batch its evaluation ran).')
  flags.DEFINE_integer('max_rows', 25, 'Images printed in the table (0: all).')
  flags.mark_flag_as_required('workdir')


# Files decoded at once: bounds memory, whatever the number of images.
CHUNK_IMAGES = 4096


def output_dir(out: str | None, workdir: str, checkpoint: str) -> pathlib.Path:
  """Where results go: `out`, or a new folder under classified/.

  Raises:
    errors.InputError: it is inside the workdir, or is not a new or empty
      folder.
  """
  if out is None:
    stamp = time.strftime('%Y%m%d-%H%M%S')
    name = os.path.basename(os.path.normpath(os.path.abspath(workdir)))
    out = os.path.join('classified', f'{name}-{checkpoint}-{stamp}')
  classify_report.check_fresh(out, workdir)
  return pathlib.Path(out)


def _predict(top_k_fn, params, images: np.ndarray,
             batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(probabilities, classes) [N, k] of `images`, in padded batches.

  Every batch is dispatched before any result is read, so the host pads the
  next batch while the device runs the last.
  """
  pending = []
  if not len(images):  # Every image of a chunk skipped as unreadable.
    return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int32)
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    real = len(batch)
    if real < batch_size:
      batch = np.pad(batch, [(0, batch_size - real)] + [(0, 0)] * 3)
    pending.append((top_k_fn(params, batch), real))
  probabilities = [np.asarray(p)[:real] for (p, _), real in pending]
  classes = [np.asarray(c)[:real] for (_, c), real in pending]
  return np.concatenate(probabilities), np.concatenate(classes)


def classify(workdir: str, paths: Sequence[str], *,
             checkpoint: str = trained_model.LAST, top_k: int = 5,
             out: str | None = None, skip_bad: bool = False,
             batch_size: int = 0) -> tuple[classify_report.Classification,
                                            pathlib.Path]:
  """Classifies the images of `paths` and writes the results; see the module.

  Returns the results and the folder they were written to.

  Raises:
    errors.InputError: bad input (the module docstring lists it).
  """
  started = time.perf_counter()
  if not paths:
    raise errors.InputError('name at least one image file or folder to '
                            'classify')
  if top_k < 1 or batch_size < 0:
    raise errors.InputError(f'--top_k={top_k} must be >= 1 and --batch_size='
                            f'{batch_size} >= 0')
  trained_model.parse_checkpoint(checkpoint)
  out_dir = output_dir(out, workdir, checkpoint)
  trained = trained_model.load(workdir, checkpoint)
  inputs = trained.inputs
  k = min(top_k, len(trained.class_names))
  batch_size = batch_size or int(trained.meta['config']['eval_batch_size'])
  loaded = time.perf_counter()
  images = classify_inputs.list_images(paths, trained.class_names)
  listed = time.perf_counter()
  # Compiled before the clock starts on the images: start-up, not speed.
  top_k_fn = trained.top_k_fn(k)
  params = jax.device_put(trained.params)
  channels = 1 if inputs.grayscale else 3
  jax.block_until_ready(top_k_fn(params, np.zeros(
      (batch_size, inputs.image_size, inputs.image_size, channels),
      np.float32)))
  compiled = time.perf_counter()

  predictions, skipped = [], []
  decode_s = preprocess_s = model_s = 0.0
  for start in range(0, len(images), CHUNK_IMAGES):
    chunk = images[start:start + CHUNK_IMAGES]
    t0 = time.perf_counter()
    pixels, _ = classify_inputs.decode(chunk, inputs, skip_bad)
    kept = [image for image, p in zip(chunk, pixels) if p is not None]
    skipped += [image.path for image, p in zip(chunk, pixels) if p is None]
    t1 = time.perf_counter()
    model_input = classify_inputs.model_input(
        [p for p in pixels if p is not None], inputs)
    t2 = time.perf_counter()
    probabilities, classes = _predict(top_k_fn, params, model_input,
                                      batch_size)
    t3 = time.perf_counter()
    decode_s, preprocess_s, model_s = (decode_s + t1 - t0,
                                       preprocess_s + t2 - t1,
                                       model_s + t3 - t2)
    predictions += [classify_report.Prediction(
        path=image.path, true_class=image.true_class,
        classes=tuple(trained.class_names[c] for c in row_classes),
        probabilities=tuple(float(q) for q in row_probabilities))
                    for image, row_classes, row_probabilities in zip(
                        kept, classes, probabilities)]
  if skipped:
    logging.warning('Skipped %d unreadable image(s), e.g. %s.', len(skipped),
                    skipped[0])
  timing = classify_report.Timing(
      images=len(predictions),
      startup_s=(loaded - started) + (compiled - listed),
      list_s=listed - loaded, decode_s=decode_s, preprocess_s=preprocess_s,
      model_s=model_s)
  result = classify_report.Classification(
      trained=trained, paths=tuple(paths), top_k=k,
      predictions=tuple(predictions), skipped=tuple(skipped), timing=timing)
  try:
    out_dir.mkdir(parents=True, exist_ok=True)
    classify_report.write(result, out_dir)
  except OSError as e:
    raise errors.InputError(
        f'could not write the results into {out_dir} ({e.strerror or e})'
    ) from e
  return result, out_dir


def main(argv: list[str]) -> None:
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  # pylint: enable=g-import-not-at-top
  tf.config.experimental.set_visible_devices([], 'GPU')  # JAX's, not TF's.
  distributed.quiet_libraries()
  try:
    result, out_dir = classify(
        FLAGS.workdir, argv[1:], checkpoint=FLAGS.checkpoint,
        top_k=FLAGS.top_k, out=FLAGS.out, skip_bad=FLAGS.skip_bad,
        batch_size=FLAGS.batch_size)
  except errors.InputError as e:
    errors.fail('classify', e)
  print(f'{result.trained.workdir}: {result.trained.describe()}')
  print(classify_report.printed(result, FLAGS.max_rows))
  print(f'Results in {out_dir}')

