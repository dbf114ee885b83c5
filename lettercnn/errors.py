"""The one exception type for bad user input, and every command's exit codes.

Every command (lettercnn.main, lr_find, classify, classify.export, report,
sweep.grid) exits with:

  DONE (0)          done; for a run: it finished, whatever its status, or was
                    already finished
  FAILED (1)        the run failed: an unexpected error
  BAD_INPUT (2)     bad input or usage: any InputError, a bad flag, config,
                    folder or argument, named in one line on stderr
  BUSY (75)         the workdir is busy: another process holds its lock
                    (EX_TEMPFAIL; a sweep reports such a run as busy)
  128 + signal      stopped by a signal (130 SIGINT, 143 SIGTERM) after
                    saving a checkpoint

`exit_code(error)` applies the rule to the error a command stops on.
"""

import sys
from typing import NoReturn

DONE = 0
FAILED = 1
BAD_INPUT = 2
BUSY = 75
SIGNALLED = 128


class InputError(ValueError):
  """A config value, file or folder the user gave is unusable.

  Commands print its message as a single line and exit `exit_code(error)`,
  so the message must name the offending value or path and say what is
  wrong.
  """
  exit_code = BAD_INPUT


def stopped_by(signum: int) -> int:
  """The exit code of a run stopped by signal `signum` (130 for SIGINT)."""
  return SIGNALLED + signum


def exit_code(error: BaseException) -> int:
  """The exit code of a command that stops on `error`.

  An error that carries its own `exit_code` (InputError's BAD_INPUT, a busy
  workdir's BUSY, a stop signal's 128 + signal) exits with it; any other
  error is a failed run, FAILED.
  """
  code = getattr(error, 'exit_code', None)
  return code if isinstance(code, int) else FAILED


def fail(program: str, error: BaseException) -> NoReturn:
  """Prints `program: error: ERROR` as one line and exits `exit_code(error)`."""
  print(f'{program}: error: {error}', file=sys.stderr, flush=True)
  sys.exit(exit_code(error))
