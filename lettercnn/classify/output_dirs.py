"""Folders that the tools reading a run (classify, export_split) write into.

They never write into the workdir they read, and never mix their files with
older ones: the folder must be outside the workdir, and new or empty.
"""

import os

from lettercnn import errors


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return path == folder or path.startswith(folder + os.sep)


def check_fresh(out: str, workdir: str) -> None:
  """Raises InputError unless `out` is outside `workdir` and new or empty."""
  if _inside(out, workdir):
    raise errors.InputError(
        f'--out {out} is inside the workdir {workdir}, which is only read; '
        'choose a folder outside it')
  if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
    raise errors.InputError(
        f'--out {out} exists and is not an empty folder; give a new one')
