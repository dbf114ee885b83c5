"""Orbax checkpoints of a run: what to save, and restoring the newest good one.

A checkpoint holds the training state, the train metrics accumulated since the
last flush (per device, exactly as they sit on the devices) and the run's
status, which includes its config. The arrays are saved as a state dict
(`flax.serialization.to_state_dict`: nested dicts of host arrays, in the
dtypes JAX holds them), so a checkpoint can be read back exactly as written,
without a template that might cast it.

Orbax writes each checkpoint into a temporary folder and renames it when
complete, so a kill during a save leaves no checkpoint that looks finished. A
SHA-256 of the saved arrays and one of the rest of its metadata, stored in
the metadata, tell a checkpoint corrupted on disk afterwards: everything a
resume or a classifier reads from it is verified. Restoring distinguishes three cases:

* corrupt (a file does not read, or the arrays do not match their SHA-256):
  reported, moved aside to WORKDIR/corrupt_checkpoints/, and the previous one
  is tried;
* incompatible (it reads and verifies, but its arrays have other names,
  shapes or dtypes than the code now builds, e.g. after a model change):
  `IncompatibleCheckpoint`, naming the first difference, and nothing is
  moved;
* good: returned.

Besides the latest checkpoints, WORKDIR/best_checkpoint/ holds one more: the
state of the epoch with the best validation accuracy so far
(`Checkpointer.save_best`). It is a folder of its own, rather than orbax's
keep-by-metric in the same manager, so that it exists whatever
`checkpoint_every_epochs` saves, follows the run's own rule for the best
epoch (the first to reach the highest accuracy), and leaves resuming alone:
`restore_latest` reads checkpoints/ only.

`CheckpointReader` reads both folders without changing anything in the
workdir, for a classifier.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from typing import Any

from absl import logging
from flax import serialization
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lettercnn import distributed
from lettercnn import errors

CHECKPOINT_DIR = 'checkpoints'
BEST_DIR = 'best_checkpoint'
CORRUPT_DIR = 'corrupt_checkpoints'
MAX_TO_KEEP = 3


class IncompatibleCheckpoint(errors.InputError):
  """A checkpoint that is intact but does not fit the state the code builds."""


class SaveFailed(errors.InputError):
  """A checkpoint could not be written (e.g. a full disk); earlier ones stand."""


class CorruptCheckpoint(errors.InputError):
  """A checkpoint that does not read, or whose arrays fail their SHA-256."""


@dataclasses.dataclass
class Snapshot:
  """Everything a run needs to continue exactly where it stopped.

  `arrays` is a pytree of arrays (state, metrics); `meta` is JSON.
  """
  step: int
  arrays: Any
  meta: dict[str, Any]


def array_digest(arrays: Any) -> str:
  """SHA-256 over the dtypes, shapes and bytes of a pytree's arrays."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(arrays):
    leaf = np.asarray(leaf)
    digest.update(str((leaf.dtype, leaf.shape)).encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


class _UnreadableCheckpoint(Exception):
  """A checkpoint's files fail to read or to verify; the message says how."""


def meta_digest(meta: dict[str, Any]) -> str:
  """SHA-256 of `meta` as JSON reads it back (sorted keys, no digest field)."""
  fields = {k: v for k, v in meta.items() if k != 'meta_sha256'}
  text = json.dumps(json.loads(json.dumps(fields)), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()


def _verified_meta(saved: dict[str, Any]) -> dict[str, Any]:
  """A checkpoint's metadata less its digests, if it matches its SHA-256.

  Metadata saved without `meta_sha256` (by an older lettercnn) is taken as
  it is; its arrays are still verified.

  Raises:
    _UnreadableCheckpoint: the metadata does not match its SHA-256.
  """
  meta = dict(saved)
  digest = meta.pop('meta_sha256', None)
  if digest is not None and digest != meta_digest(meta):
    raise _UnreadableCheckpoint('its metadata does not match its SHA-256')
  return meta


def _as_saved(arrays: Any) -> Any:
  """`arrays` as a state dict of host arrays in the dtypes JAX gives them.

  A Python int step becomes int32, as it is once on a device, so a template
  built before training has the dtypes of what training saves.
  """
  return jax.tree.map(lambda x: np.asarray(jax.device_get(jnp.asarray(x))),
                      serialization.to_state_dict(arrays))


def first_difference(saved: Any, expected: Any) -> str | None:
  """Where two state dicts differ in names, shapes or dtypes, or None."""
  saved_leaves = dict(jax.tree_util.tree_flatten_with_path(saved)[0])
  expected_leaves = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  for path in sorted(set(saved_leaves) | set(expected_leaves), key=str):
    name = jax.tree_util.keystr(path)
    if path not in saved_leaves:
      return f'{name} is missing from it'
    if path not in expected_leaves:
      return f'it has {name}, which the code no longer has'
    have, want = saved_leaves[path], expected_leaves[path]
    if (have.dtype, have.shape) != (want.dtype, want.shape):
      return (f'{name} is {have.dtype}{list(have.shape)} there, '
              f'{want.dtype}{list(want.shape)} now')
  if jax.tree.structure(saved) != jax.tree.structure(expected):
    return 'its tree of arrays has another shape'
  return None


# Room for a checkpoint's JSON and orbax's metadata files, besides the arrays.
_META_BYTES = 2**18


def _free_bytes(path: str) -> int:
  """Bytes that an unprivileged process may still write where `path` is."""
  stats = os.statvfs(path)
  return stats.f_bavail * stats.f_frsize


def _reason(error: Exception) -> str:
  """A short one-line cause of a failed write."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  text = ' '.join(str(error).split())
  for cause in ('No space left on device', 'Read-only file system',
                'Permission denied', 'Disk quota exceeded'):
    if cause in text:
      return cause
  return text[:200]


def _manager(directory: str, max_to_keep: int | None) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=max_to_keep, enable_async_checkpointing=False,
          create=True, cleanup_tmp_directories=True))


def _quiet_abandoned_reads() -> None:
  """Keeps the reads a failed restore abandoned from filling the log.

  Tensorstore finishes them after orbax has closed its event loop, and
  Python reports each of their callbacks as an unraisable
  `RuntimeError: Event loop is closed`; the checkpoint is set aside with its
  own one-line reason. Other unraisable errors are reported as before.
  """
  previous = sys.unraisablehook
  if getattr(previous, 'drops_abandoned_reads', False):
    return

  def hook(unraisable: Any) -> None:
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError)
            and str(error) == 'Event loop is closed'):
      previous(unraisable)

  hook.drops_abandoned_reads = True
  sys.unraisablehook = hook


def _read_verified(manager: ocp.CheckpointManager,
                   step: int) -> tuple[Any, dict[str, Any]]:
  """(arrays, meta) of the checkpoint at `step`, its arrays verified.

  Raises:
    _UnreadableCheckpoint: a file does not read, or the arrays fail their
      SHA-256.
  """
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  except Exception as e:  # pylint: disable=broad-except
    # A missing or unreadable file; orbax and tensorstore raise many types.
    _quiet_abandoned_reads()
    raise _UnreadableCheckpoint(f'{type(e).__name__}: {str(e)[:200]}') from e
  meta = _verified_meta(restored['meta'])
  if meta.pop('arrays_sha256', None) != array_digest(restored['arrays']):
    raise _UnreadableCheckpoint('its arrays do not match their SHA-256')
  return restored['arrays'], meta


class Checkpointer:
  """Saves and restores Snapshots under WORKDIR/checkpoints (and the best)."""

  def __init__(self, workdir: str):
    self._workdir = workdir
    self._directory = os.path.join(workdir, CHECKPOINT_DIR)
    self._manager = _manager(self._directory, MAX_TO_KEEP)
    self._best_directory = os.path.join(workdir, BEST_DIR)
    self._best_manager = None  # Made by the first best save.

  def steps(self) -> list[int]:
    """The steps of the finished checkpoints, newest first."""
    return sorted(self._manager.all_steps(), reverse=True)

  def save(self, snapshot: Snapshot) -> None:
    """Writes `snapshot` (synchronously; returns once it is on disk).

    A step that already has a checkpoint keeps it: a run holds one state per
    step, so this happens only when a stop signal arrives right after a
    scheduled save, and the checkpoint on disk is that same state.

    Raises:
      SaveFailed: the disk has no room for it, or refused the write (full,
        read-only, ...). Orbax writes into a temporary folder, so the
        checkpoints before stand.
    """
    if snapshot.step in self._manager.all_steps():
      logging.info('Checkpoint at step %d already saved.', snapshot.step)
      return
    self._write(self._manager, self._directory, snapshot)

  def save_best(self, snapshot: Snapshot) -> None:
    """Makes `snapshot` the one checkpoint in WORKDIR/best_checkpoint/.

    The earlier best is deleted once the new one is on disk, so the folder
    never lacks a complete one. A step saved already is kept, as in `save`:
    a run resumed from before its best epoch trains that epoch again to the
    same state.

    Raises:
      SaveFailed: as `save`.
    """
    if self._best_manager is None:
      self._best_manager = _manager(self._best_directory, max_to_keep=None)
    if snapshot.step not in self._best_manager.all_steps():
      self._write(self._best_manager, self._best_directory, snapshot)
    for step in self._best_manager.all_steps():
      if step != snapshot.step:
        self._best_manager.delete(step)

  def _write(self, manager: ocp.CheckpointManager, directory: str,
             snapshot: Snapshot) -> None:
    arrays = _as_saved(snapshot.arrays)
    self.check_space(snapshot.step, arrays, directory)
    meta = dict(snapshot.meta, arrays_sha256=array_digest(arrays))
    meta['meta_sha256'] = meta_digest(meta)
    try:
      manager.save(snapshot.step, args=ocp.args.Composite(
          arrays=ocp.args.StandardSave(arrays),
          meta=ocp.args.JsonSave(meta)), force=True)
      manager.wait_until_finished()
    # Python's file calls raise OSError; tensorstore, which writes the
    # arrays, a ValueError such as "RESOURCE_EXHAUSTED: ... No space left on
    # device [os_error_code='28']".
    except (OSError, ValueError) as e:
      raise SaveFailed(
          f'could not write the checkpoint at step {snapshot.step} in '
          f'{directory} ({_reason(e)}); {self._kept()}') from e

  def check_space(self, step: int, arrays: Any,
                  directory: str | None = None) -> None:
    """Raises SaveFailed unless the disk has room for `arrays` uncompressed.

    Checked before each save, in the folder it writes to (the latest
    checkpoints' by default; the workdir's disk for a best checkpoint's
    folder not made yet), and once before training, because a save that
    runs out of space fails deep in orbax's writer threads, which log
    tracebacks of their own before the error reaches lettercnn.
    """
    directory = directory or self._directory
    needed = _META_BYTES + sum(
        np.asarray(x).nbytes for x in jax.tree.leaves(arrays))
    free = _free_bytes(directory if os.path.isdir(directory)
                       else self._workdir)
    if free < needed:
      raise SaveFailed(
          f'not enough disk for checkpoints in {directory}: one needs up '
          f'to {needed / 2**20:.1f} MiB and {free / 2**20:.1f} MiB are free; '
          f'{self._kept()}, free some space and run again')

  def _kept(self) -> str:
    steps = self.steps()
    return (f'the checkpoint at step {steps[0]} is intact' if steps
            else 'there is no earlier checkpoint')

  def restore_latest(self, template: Any) -> Snapshot | None:
    """The newest intact checkpoint, shaped like `template`; None if none.

    Corrupt checkpoints are set aside, newest first, until one verifies.
    In a multi-process run every process calls it: each reads the same
    files, so all restore the same step, and process 0 alone moves the
    corrupt ones.

    Raises:
      IncompatibleCheckpoint: the newest intact checkpoint does not fit
        `template`; nothing is moved.
    """
    expected = _as_saved(template)
    for step in self.steps():
      try:
        arrays, meta = _read_verified(self._manager, step)
      except _UnreadableCheckpoint as e:
        self._set_aside(step, str(e))
        continue
      difference = first_difference(arrays, expected)
      if difference is not None:
        raise IncompatibleCheckpoint(
            f'the checkpoint at step {step} in '
            f'{self._directory} is intact but does '
            f'not fit this code: {difference}; resume it with the code that '
            'wrote it, or train into another --workdir')
      return Snapshot(step=step, meta=meta,
                      arrays=serialization.from_state_dict(template, arrays))
    return None

  def _set_aside(self, step: int, reason: str) -> None:
    """Moves a corrupt checkpoint out of the manager's way, keeping it."""
    source = os.path.join(self._directory, str(step))
    target = os.path.join(self._workdir, CORRUPT_DIR, str(step))
    logging.warning('Checkpoint at step %d is corrupt (%s); moved to %s, '
                    'trying the previous one.', step, reason, target)
    if distributed.is_primary():
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.rmtree(target, ignore_errors=True)
      os.replace(source, target)
    distributed.agreed(lambda: None)  # No process reloads before the move.
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()
    if self._best_manager is not None:
      self._best_manager.close()


class CheckpointReader:
  """A workdir's checkpoints, read without changing anything in the workdir.

  Unlike `Checkpointer` it creates no folder, removes no temporary one and
  sets no corrupt checkpoint aside, so it may read a run that is training, or
  one on a read-only disk. It reads for this process alone, even in a
  multi-process run (where a `Checkpointer` needs every process).
  """

  def __init__(self, workdir: str):
    self._folders = {}  # Folder -> its read-only manager; only existing ones.
    for name in (CHECKPOINT_DIR, BEST_DIR):
      directory = os.path.join(workdir, name)
      if os.path.isdir(directory):
        # The options read_only implies, given, so that orbax logs no
        # warning that it changed them.
        self._folders[directory] = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(
                read_only=True, save_interval_steps=0, max_to_keep=None,
                create=False, cleanup_tmp_directories=False,
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    primary_host=jax.process_index(),
                    active_processes={jax.process_index()})))
    self._latest = self._folders.get(os.path.join(workdir, CHECKPOINT_DIR))
    self._best = self._folders.get(os.path.join(workdir, BEST_DIR))

  def steps(self) -> list[int]:
    """The steps of the latest checkpoints, newest first."""
    if self._latest is None:
      return []
    return sorted(self._latest.all_steps(), reverse=True)

  def latest_meta(self) -> Snapshot | None:
    """The newest latest checkpoint whose metadata reads, without its arrays.

    For telling which run a workdir holds before training.
    """
    for step in self.steps():
      try:
        restored = self._latest.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = _verified_meta(restored['meta'])
      except Exception:  # pylint: disable=broad-except
        continue  # Unreadable: the run's restore_latest sets it aside.
      meta.pop('arrays_sha256', None)
      return Snapshot(step=step, arrays=None, meta=meta)
    return None

  def best_step(self) -> int | None:
    """The step of the best checkpoint, or None if the run has none."""
    steps = self._best.all_steps() if self._best else []
    return max(steps) if steps else None

  def read(self, step: int) -> Snapshot:
    """The checkpoint at `step` (of `steps` or `best_step`), arrays verified.

    Its arrays are the state dict as saved, with no template to fit.

    Raises:
      CorruptCheckpoint: it does not read, or fails its SHA-256.
      KeyError: no checkpoint has that step.
    """
    for directory, manager in self._folders.items():
      if step in manager.all_steps():
        try:
          arrays, meta = _read_verified(manager, step)
        except _UnreadableCheckpoint as e:
          raise CorruptCheckpoint(
              f'the checkpoint at step {step} in {directory} is corrupt '
              f'({e})') from e
        return Snapshot(step=step, arrays=arrays, meta=meta)
    raise KeyError(step)

  def close(self) -> None:
    for manager in self._folders.values():
      manager.close()
