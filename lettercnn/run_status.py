"""WORKDIR/status.json: where a run stands, for sweeps and the report."""

import json
import os
from typing import Any

import ml_collections

from lettercnn import errors

STATUS_FILE = 'status.json'
RUNNING = 'running'
DIVERGED = 'diverged'
NOT_CONVERGED = 'not_converged'
CONVERGED = 'converged'
FINISHED = (DIVERGED, NOT_CONVERGED, CONVERGED)


def write(workdir: str, status: dict[str, Any]) -> None:
  """Atomically replaces WORKDIR/status.json, so readers never see half a file."""
  path = os.path.join(workdir, STATUS_FILE)
  tmp_path = path + '.tmp'
  with open(tmp_path, 'w') as f:
    json.dump(status, f, indent=2, sort_keys=True)
  os.replace(tmp_path, path)


def read(workdir: str) -> dict[str, Any] | None:
  """Returns WORKDIR/status.json's content, or None when there is none."""
  path = os.path.join(workdir, STATUS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def existing_run(config: ml_collections.ConfigDict,
                 workdir: str) -> dict[str, Any] | None:
  """The status of the run already in `workdir`, if any.

  Raises InputError when that run has a different config: resuming it with
  this one would silently mix two experiments.
  """
  status = read(workdir)
  if status is None:
    return None
  saved, current = status['config'], config.to_dict()
  differences = sorted(key for key in set(saved) | set(current)
                       if saved.get(key) != current.get(key))
  if differences:
    shown = ', '.join(f'{k}: {saved.get(k)!r} there vs {current.get(k)!r} now'
                      for k in differences)
    raise errors.InputError(
        f'workdir {workdir} holds a run of a different config ({shown}); '
        'pass another --workdir, or delete that folder to start afresh')
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
