"""A run's workdir: one process at a time, and which run it already holds.

The lock is an `flock` on WORKDIR/.lock, which the kernel releases when its
holder exits however it exits (SIGKILL included), so a killed run never
leaves the workdir locked. The file records the holder's pid for the message
a second process gets, and is removed when the holder lets go.

Which run a workdir holds is told by its status.json, or, when that is gone
or unreadable, by the status saved in its newest checkpoint: the config and
device count travel with the checkpoints, so losing status.json neither
lets another config train into the folder nor loses its history.
"""

import contextlib
import errno
import fcntl
import glob
import json
import os
from typing import Any, Iterator

from absl import logging
import ml_collections

from lettercnn import errors
from lettercnn.run import events
from lettercnn.run import file_lock
from lettercnn.run import status as run_status

LOCK_FILE = '.lock'
# What a run folder may hold before its first status.json or checkpoint: the
# lock, and the log the sweep launcher appends a run's output to
# (lettercnn.sweep.launch.LOG_FILE) before it launches the run.
BEFORE_A_RUN = frozenset({LOCK_FILE, 'log.txt'})
# `lettercnn.main`'s exit status when another process holds the workdir
# (EX_TEMPFAIL): the sweep reports such a run as busy, not failed.
BUSY_EXIT_CODE = errors.BUSY


class Busy(errors.InputError):
  """Another process holds the workdir's lock."""
  exit_code = BUSY_EXIT_CODE


def _recorded_pid(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip() or 'unknown'
  except OSError:
    return 'unknown'


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
  """Holds WORKDIR's lock, creating the folder; one line if it cannot.

  Raises:
    Busy: another live process holds it.
    errors.InputError: the workdir is not a writable folder.
  """
  path = os.path.join(workdir, LOCK_FILE)
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = file_lock.acquire(path, blocking=False)
  except OSError as e:
    reason = ('is a file, not a folder'
              if e.errno in (errno.EEXIST, errno.ENOTDIR)
              else f'cannot be written ({e.strerror or e})')
    raise errors.InputError(f'workdir {workdir} {reason}') from e
  if fd is None:
    raise Busy(f'workdir {workdir} is in use by process '
               f'{_recorded_pid(path)} (it holds {path}); wait for it to end, '
               'or pass another --workdir')
  try:
    os.ftruncate(fd, 0)
    os.write(fd, f'{os.getpid()}\n'.encode())
  except OSError as e:  # A full disk.
    os.close(fd)
    raise errors.InputError(
        f'workdir {workdir} cannot be written ({e.strerror or e})') from e
  try:
    yield
  finally:
    os.remove(path)
    os.close(fd)


@contextlib.contextmanager
def claimed(config: ml_collections.ConfigDict, workdir: str,
            num_devices: int) -> Iterator[dict[str, Any] | None]:
  """Holds WORKDIR's lock and yields `existing_run`'s status.

  In a multi-process run process 0 alone holds the lock and reads the
  workdir; every process gets its status, or raises its error.
  """
  # Imported here: it imports JAX, which the sweep's calls of `main` below
  # do not need.
  from lettercnn import distributed  # pylint: disable=g-import-not-at-top
  with contextlib.ExitStack() as stack:

    def claim() -> dict[str, Any] | None:
      check_not_foreign(workdir)  # Before the lock writes into the folder.
      stack.enter_context(locked(workdir))
      return existing_run(config, workdir, num_devices)

    yield distributed.agreed(claim, primary_only=True)


def holder(workdir: str) -> str | None:
  """The pid recorded by the process holding WORKDIR's lock, or None."""
  path = os.path.join(workdir, LOCK_FILE)
  if not os.path.exists(path):
    return None
  try:
    fd = os.open(path, os.O_RDONLY)
  except FileNotFoundError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return _recorded_pid(path)
  finally:
    os.close(fd)
  return None


def _status_from_checkpoints(workdir: str) -> dict[str, Any] | None:
  """The status saved with the newest readable checkpoint, or None."""
  from lettercnn.run import checkpoints as checkpointing  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(os.path.join(workdir, checkpointing.CHECKPOINT_DIR)):
    return None
  reader = checkpointing.CheckpointReader(workdir)
  try:
    snapshot = reader.latest_meta()
  finally:
    reader.close()
  return None if snapshot is None else snapshot.meta


def _has_events(workdir: str) -> bool:
  return bool(glob.glob(os.path.join(workdir, events.EVENT_FILE_PATTERN)))


def check_not_foreign(workdir: str) -> None:
  """Refuses a folder of other files than a lettercnn run's.

  A run's folder holds status.json, checkpoints/ or best_checkpoint/, or
  TensorBoard events (which `existing_run` names itself), and before those
  only the files of BEFORE_A_RUN. A missing or empty folder is a new run's.

  Raises:
    errors.InputError: `workdir` exists and holds anything else alone.
  """
  from lettercnn.run import checkpoints as checkpointing  # pylint: disable=g-import-not-at-top
  try:
    entries = set(os.listdir(workdir))
  except OSError:  # Missing, or a file: `locked` makes it or names it.
    return
  ours = {run_status.STATUS_FILE, checkpointing.CHECKPOINT_DIR,
          checkpointing.BEST_DIR}
  if entries & ours or entries <= BEFORE_A_RUN or _has_events(workdir):
    return
  others = sorted(entries - BEFORE_A_RUN)
  shown = ', '.join(others[:3]) + (f' and {len(others) - 3} more'
                                   if len(others) > 3 else '')
  raise errors.InputError(
      f'workdir {workdir} is not empty and holds no lettercnn run (it holds '
      f'{shown}); pass a new or empty folder as --workdir')


def existing_run(config: ml_collections.ConfigDict, workdir: str,
                 num_devices: int) -> dict[str, Any] | None:
  """The status of the run already in `workdir`, if any (hold its lock).

  A missing or unreadable status.json is rebuilt from the newest checkpoint
  once the run there is known to be this one.

  Raises:
    errors.InputError: the run there has another config or device count
      (resuming it would silently mix two experiments), nothing tells
      which config wrote what the folder holds, or the folder holds no run
      but other files (`check_not_foreign`).
  """
  try:
    status, problem = run_status.read(workdir), None
  except run_status.UnreadableStatus as e:
    status, problem = None, str(e)
  rebuilt = status is None
  if rebuilt:
    status = _status_from_checkpoints(workdir)
  if status is None:
    if problem is None and not _has_events(workdir):
      check_not_foreign(workdir)
      return None
    raise errors.InputError(
        f'workdir {workdir} holds '
        f'{problem or "TensorBoard events but no status.json"} and no '
        'checkpoint that says which config wrote it; move it aside, or pass '
        'another --workdir')
  _check_same_run(status, config, workdir, num_devices)
  if rebuilt:
    logging.warning('%s: %s; rebuilt it from the checkpoint at step %d.',
                    workdir, problem or f'no {run_status.STATUS_FILE}',
                    status['step'])
    run_status.write(workdir, status)
  return status


# Fields that only choose the devices a run trains on, which is compared on
# its own below: resuming with --config.num_devices=N, as the refusal says,
# or without a `cpu_devices` field, is the same run on the same devices.
_DEVICE_FIELDS = frozenset({'num_devices', 'cpu_devices'})


def _as_recorded(config: dict[str, Any]) -> dict[str, Any]:
  """`config` as status.json holds it, its policy fields left None resolved.

  (Tuples become lists.) A None policy field means the policy's default
  (lettercnn.optim.schedules.settings), so it compares as that value.
  """
  # Imported here: it imports JAX, which the sweep's calls of `main` do not
  # need.
  from lettercnn.optim import schedules  # pylint: disable=g-import-not-at-top
  resolved = schedules.settings(config)._asdict()
  filled = {k: v for k, v in resolved.items() if k in config
            and config[k] is None}
  return json.loads(json.dumps({**config, **filled}))


def _check_same_run(status: dict[str, Any], config: ml_collections.ConfigDict,
                    workdir: str, num_devices: int) -> None:
  saved = _as_recorded(status['config'])
  current = _as_recorded(config.to_dict())
  differences = [f'{k}: {saved.get(k)!r} there vs {current.get(k)!r} now'
                 for k in sorted((set(saved) | set(current)) - _DEVICE_FIELDS)
                 if saved.get(k) != current.get(k)]
  if differences:
    raise errors.InputError(
        f'workdir {workdir} holds a run of a different config '
        f'({", ".join(differences)}); pass another --workdir, or delete that '
        'folder to start afresh')
  saved_devices = status.get('num_devices', num_devices)
  if status['status'] not in run_status.FINISHED and (
      saved_devices != num_devices):
    raise errors.InputError(
        f'workdir {workdir} holds a run on {saved_devices} device(s), and this '
        f'one would use {num_devices}: the device count splits each batch, so '
        f'resume with --config.num_devices={saved_devices} (if the machine has'
        ' that many), or pass another --workdir')
