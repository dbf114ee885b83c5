"""WORKDIR/status.json: where a run stands, for sweeps and the report."""

import json
import os
from typing import Any

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
