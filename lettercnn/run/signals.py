"""Stop signals: SIGTERM or SIGINT ends a run at a step it checkpoints.

The loop checks `StopSignals.requested()` between chunks of steps, saves a
checkpoint of the step reached and raises `Preempted`; the command exits
128 + the signal's number, and rerunning it resumes from that step.
"""

import signal

from absl import logging
import jax

from lettercnn import distributed
from lettercnn import errors


class Preempted(Exception):
  """SIGTERM or SIGINT arrived; the run saved a checkpoint and must exit."""

  def __init__(self, signum: int, step: int):
    super().__init__(
        f'stopped by signal {signum} at step {step}; checkpoint saved')
    self.exit_code = errors.stopped_by(signum)


class StopSignals:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps.

  In a multi-process run the processes vote at each check, so that all stop
  at the same step when any of them got a signal.
  """

  def __init__(self, devices: list[jax.Device]):
    self.signum = None
    self._previous = {}
    self._vote = (distributed.StopVote(devices) if jax.process_count() > 1
                  else None)

  def requested(self) -> bool:
    """Whether to stop now (a collective in a multi-process run)."""
    if self._vote is not None:
      self.signum = self._vote(self.signum or 0) or None
    return self.signum is not None

  def __enter__(self) -> 'StopSignals':
    for signum in (signal.SIGTERM, signal.SIGINT):
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    del frame
    logging.warning('Signal %d: saving a checkpoint before exiting.', signum)
    self.signum = signum

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
