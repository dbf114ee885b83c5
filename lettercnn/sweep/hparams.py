"""TensorBoard's HParams view of a whole sweep from one `--logdir`.

Every run already logs its config as hparams (a session). This module writes
the experiment summary at the sweep folder's root that tells TensorBoard which
of them were swept (learning rate, batch size, seed and any other field that
differs between runs) and which metrics to show, so that
`tensorboard --logdir SWEEP_DIR` shows one row per run with its swept values
and final accuracies, instead of all 30-odd config fields and every scalar.
"""

import pathlib
import time
from collections.abc import Sequence

from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import summary_v2
from tensorboard.summary.writer import event_file_writer

from lettercnn.run import events
from lettercnn.sweep import runs as report_runs
from lettercnn.sweep import points as sweep_points

# The experiment file's name ends in this, so the next report replaces it.
FILE_SUFFIX = '.lettercnn_sweep_hparams'
# Always shown, when the runs have them, ahead of other swept fields.
_LEADING_FIELDS = ('learning_rate', 'batch_size', 'seed')
METRICS = (
    ('val_accuracy', 'validation accuracy (last)'),
    ('epoch_train_accuracy', 'training accuracy (last epoch)'),
    ('val_loss', 'validation loss (last)'),
    ('epoch_train_loss', 'training loss (last epoch)'),
)


def swept_fields(runs: Sequence[report_runs.RunSummary]) -> list[str]:
  """Learning rate, batch size and seed, then every other field that varies."""
  present = {field for run in runs for field in (run.config or {})}
  varying = sweep_points.varying_fields(runs)
  leading = [f for f in _LEADING_FIELDS if f in present]
  return leading + [f for f in varying if f not in leading]


def _domain(values: list[object]) -> summary_v2.Discrete:
  """The values as one Discrete domain; mixed types become text."""
  if len({type(v) for v in values}) > 1:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v in values)
    values = ([float(v) for v in values] if numeric
              else [str(v) for v in values])
  return summary_v2.Discrete(sorted(set(values)))


def write_experiment(sweep_dir: pathlib.Path,
                     runs: Sequence[report_runs.RunSummary]) -> pathlib.Path:
  """Writes the sweep's experiment summary at its root; returns the file.

  The previous one this function wrote is removed first, so the folder holds
  one and TensorBoard reads the current grid.
  """
  hparams = []
  for field in swept_fields(runs):
    values = [events.logged_value(run.config[field]) for run in runs
              if run.config and field in run.config]
    hparams.append(summary_v2.HParam(field, _domain(values)))
  metrics = [summary_v2.Metric(tag, display_name=name)
             for tag, name in METRICS]
  summary = summary_v2.hparams_config_pb(hparams, metrics)
  for old in sweep_dir.glob(events.EVENT_FILE_PATTERN + FILE_SUFFIX):
    old.unlink()
  writer = event_file_writer.EventFileWriter(str(sweep_dir),
                                             filename_suffix=FILE_SUFFIX)
  writer.add_event(event_pb2.Event(wall_time=time.time(), summary=summary))
  writer.close()
  (path,) = sweep_dir.glob(events.EVENT_FILE_PATTERN + FILE_SUFFIX)
  return path
