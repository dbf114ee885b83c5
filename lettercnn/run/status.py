"""WORKDIR/status.json: where a run stands, for main, sweeps and the report.

This module is the one reader and writer of the file.
"""

import json
import os
from typing import Any

from lettercnn import errors
from lettercnn import files

STATUS_FILE = 'status.json'
RUNNING = 'running'
DIVERGED = 'diverged'
NOT_CONVERGED = 'not_converged'
CONVERGED = 'converged'
FINISHED = (DIVERGED, NOT_CONVERGED, CONVERGED)


class UnreadableStatus(errors.InputError):
  """status.json exists but is not a run's status (cut short, edited, ...)."""


def write(workdir: str, status: dict[str, Any]) -> None:
  """Atomically replaces WORKDIR/status.json, so readers never see half a file."""
  path = os.path.join(workdir, STATUS_FILE)
  try:
    files.atomic_write_text(path, json.dumps(status, indent=2, sort_keys=True))
  except OSError as e:
    raise errors.InputError(
        f'could not write {path} ({e.strerror or e}); the previous one, if '
        'any, is unchanged') from e


def save(workdir: str, status: dict[str, Any]) -> None:
  """`write`, by process 0 alone in a multi-process run."""
  from lettercnn import distributed  # pylint: disable=g-import-not-at-top
  if distributed.is_primary():
    write(workdir, status)


def read(workdir: str) -> dict[str, Any] | None:
  """WORKDIR/status.json's content, or None when there is none.

  Raises:
    UnreadableStatus: the file is not JSON, or lacks 'status' or 'config'.
  """
  path = os.path.join(workdir, STATUS_FILE)
  try:
    with open(path, 'rb') as f:
      status = json.loads(f.read().decode('utf-8'))
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:  # UnicodeError is a ValueError.
    raise UnreadableStatus(f'{path} does not read ({e})') from e
  if (not isinstance(status, dict) or not isinstance(status.get('status'), str)
      or not isinstance(status.get('config'), dict)):
    raise UnreadableStatus(f'{path} is not a run status')
  return status


def describe(status: dict[str, Any]) -> str:
  """One line for people: outcome, where it ended, final accuracies."""
  final = status.get('final') or {}

  def percent(key: str) -> str:
    value = final.get(key)
    return 'n/a' if value is None else f'{100 * value:.1f}%'

  return (f"{status['status']} at epoch {status['epoch']:.2f} (step "
          f"{status['step']}): train accuracy {percent('train_accuracy')}, "
          f"validation accuracy {percent('val_accuracy')}")
