"""TensorBoard event files: reading scalars back, trimming them on resume.

A run killed after its last checkpoint has already logged scalars for steps it
will train again; dropping them keeps every step in TensorBoard exactly once.
A run that restores no checkpoint starts again at step 0 and moves the events
already there aside, so nothing is deleted that no checkpoint backs.

EVENT_FILE_PATTERN names every event file, for every module that looks for
them; TensorFlow is imported only where records are read or written, so that
importing this module stays quick.
"""

import glob
import os
from typing import Any

from absl import logging
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from lettercnn import files


def _read_records(path: str) -> list[bytes]:
  """The file's complete records; a record cut short by a kill is dropped."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  records = []
  try:
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      records.append(record)
  except tf.errors.DataLossError:
    logging.warning('Dropping a truncated record at the end of %s.', path)
  return records


EVENT_FILE_PATTERN = 'events.out.tfevents.*'
SET_ASIDE_DIR = 'events_set_aside'


def set_aside_events(logdir: str) -> None:
  """Moves LOGDIR's event files into LOGDIR/events_set_aside/<n>/."""
  paths = sorted(glob.glob(os.path.join(logdir, EVENT_FILE_PATTERN)))
  if not paths:
    return
  parent = os.path.join(logdir, SET_ASIDE_DIR)
  os.makedirs(parent, exist_ok=True)
  target = os.path.join(parent, str(len(os.listdir(parent))))
  os.makedirs(target)
  for path in paths:
    os.replace(path, os.path.join(target, os.path.basename(path)))
  logging.warning('No checkpoint restored: training starts at step 0, and the '
                  '%d event file(s) of an earlier attempt moved to %s.',
                  len(paths), target)


def drop_events_after(logdir: str, step: int) -> None:
  """Rewrites LOGDIR's event files without the events logged after `step`."""
  for path in sorted(glob.glob(os.path.join(logdir, EVENT_FILE_PATTERN))):
    records = _read_records(path)
    kept = [r for r in records if event_pb2.Event.FromString(r).step <= step]
    if len(kept) == len(records) and os.path.getsize(path) == sum(
        len(r) + 16 for r in records):
      continue
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with files.atomic_path(
        path, os.path.join(logdir, '.trimmed_events.tmp')) as temp_path:
      with tf.io.TFRecordWriter(temp_path) as writer:
        for record in kept:
          writer.write(record)
    logging.info('Dropped %d events after step %d from %s.',
                 len(records) - len(kept), step, path)


def resume_at(logdir: str, step: int | None) -> None:
  """Makes LOGDIR's events those of a run resuming at `step` (None: new run).

  Process 0's job in a multi-process run.
  """
  from lettercnn import distributed  # pylint: disable=g-import-not-at-top
  if not distributed.is_primary():
    return
  if step is None:
    set_aside_events(logdir)
  else:
    drop_events_after(logdir, step)


def logged_value(value: object) -> bool | int | float | str:
  """A config value as a run logs it in its hparams: scalars kept, the rest
  as text; a list (a tuple as status.json's JSON reads back) becomes the
  tuple's text.
  """
  if isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, list):
    return str(tuple(value))
  return str(value)


def hparams(config: Any) -> dict[str, Any]:
  """The config as TensorBoard hparams (scalars and strings; None as 'None')."""
  return {k: logged_value(v) for k, v in config.items()}


def _step(step_and_value: tuple[int, float]) -> int:
  return step_and_value[0]


def _accumulator(logdir: str) -> event_accumulator.EventAccumulator:
  """TensorBoard's reader of LOGDIR's event files, everything loaded."""
  accumulator = event_accumulator.EventAccumulator(
      logdir, size_guidance={event_accumulator.TENSORS: 0,
                             event_accumulator.SCALARS: 0})
  accumulator.Reload()
  return accumulator


def read_images(logdir: str) -> dict[str, list[tuple[int, bytes]]]:
  """Every image summary in LOGDIR's event files, by tag: (step, PNG) pairs.

  The first image of each summary (clu writes one per call and tag); pairs
  sorted by step. An image summary is a tensor of strings: width, height,
  then the encoded images.
  """
  accumulator = _accumulator(logdir)
  images = {}
  for tag in accumulator.Tags()['tensors']:
    if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != 'images':
      continue
    images[tag] = sorted(
        ((e.step, tensor_util.make_ndarray(e.tensor_proto)[2])
         for e in accumulator.Tensors(tag)), key=_step)
  return images


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """Every scalar in LOGDIR's event files, by tag: (step, value) pairs.

  Uses TensorBoard's own reader; clu writes scalars as tensor summaries.
  Pairs are sorted by step, stably: a step logged twice keeps its order.
  """
  accumulator = _accumulator(logdir)
  scalars = {}
  for tag in accumulator.Tags()['tensors']:
    events = accumulator.Tensors(tag)
    values = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
              for e in events if not e.tensor_proto.tensor_shape.dim]
    if values:
      scalars[tag] = sorted(values, key=_step)
  for tag in accumulator.Tags()['scalars']:
    scalars[tag] = sorted(
        ((e.step, e.value) for e in accumulator.Scalars(tag)), key=_step)
  return scalars
