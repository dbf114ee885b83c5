"""Progress lines in the log: epoch, step/total, images per second, ETA."""

import time

from absl import logging


class ProgressLogger:
  """Logs progress at most every `every_secs` seconds; cheap to call per step.

  The rate is measured over the last window, so compilation and dataset
  building before the first step do not skew it.
  """

  def __init__(self, total_steps: int, batch_size: int, steps_per_epoch: int,
               start_step: int = 0, every_secs: float = 30.0):
    self._total_steps = total_steps
    self._batch_size = batch_size
    self._steps_per_epoch = steps_per_epoch
    self._every_secs = every_secs
    self._last_time = time.monotonic()
    self._last_step = start_step
    self._next_time = self._last_time + every_secs

  def maybe_log(self, step: int) -> None:
    """Logs if `every_secs` have passed since the last line."""
    now = time.monotonic()
    if now < self._next_time:
      return
    self._next_time = now + self._every_secs
    steps_per_sec = (step - self._last_step) / (now - self._last_time)
    self._last_step, self._last_time = step, now
    eta_secs = (self._total_steps - step) / max(steps_per_sec, 1e-9)
    logging.info('epoch %d/%d  step %d/%d  %.0f images/s  ETA %s',
                 step // self._steps_per_epoch + 1,
                 self._total_steps // self._steps_per_epoch, step,
                 self._total_steps, steps_per_sec * self._batch_size,
                 _format_duration(eta_secs))


def _format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else (
      f'{minutes}m{seconds:02d}s')
