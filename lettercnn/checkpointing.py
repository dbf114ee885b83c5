"""Orbax checkpoints of a run: what to save, and restoring the newest good one.

A checkpoint holds the training state, the train metrics accumulated since the
last flush (per device, exactly as they sit on the devices) and the run's
status. Orbax writes each checkpoint into a temporary folder and renames it
when complete, so a kill during a save leaves no checkpoint that looks
finished. A SHA-256 of the saved arrays, stored beside them, catches a
checkpoint corrupted on disk afterwards: it is reported, moved aside to
WORKDIR/corrupt_checkpoints/ and the previous one is used.
"""

import dataclasses
import hashlib
import os
import shutil
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = 'checkpoints'
CORRUPT_DIR = 'corrupt_checkpoints'
MAX_TO_KEEP = 3


@dataclasses.dataclass
class Snapshot:
  """Everything a run needs to continue exactly where it stopped.

  `arrays` is a pytree of host arrays (state, metrics); `meta` is JSON.
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


class Checkpointer:
  """Saves and restores Snapshots under WORKDIR/checkpoints."""

  def __init__(self, workdir: str):
    self._workdir = workdir
    self._manager = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=MAX_TO_KEEP, enable_async_checkpointing=False,
            create=True))

  def save(self, snapshot: Snapshot) -> None:
    """Writes `snapshot` (synchronously; returns once it is on disk).

    A step that already has a checkpoint keeps it: a run holds one state per
    step, so this happens only when a stop signal arrives right after a
    scheduled save, and the checkpoint on disk is that same state.
    """
    if snapshot.step in self._manager.all_steps():
      logging.info('Checkpoint at step %d already saved.', snapshot.step)
      return
    meta = dict(snapshot.meta, arrays_sha256=array_digest(snapshot.arrays))
    self._manager.save(snapshot.step, args=ocp.args.Composite(
        arrays=ocp.args.StandardSave(snapshot.arrays),
        meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore_latest(self, template: Any) -> Snapshot | None:
    """The newest checkpoint that loads intact, or None when there is none.

    `template` is a pytree of arrays with the saved shapes and dtypes.
    """
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            arrays=ocp.args.StandardRestore(
                jax.tree.map(np.asarray, template)),
            meta=ocp.args.JsonRestore()))
        meta = dict(restored['meta'])
        if meta.pop('arrays_sha256') != array_digest(restored['arrays']):
          raise ValueError('array checksum mismatch')
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
        continue
      return Snapshot(step=step, arrays=restored['arrays'], meta=meta)
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    """Moves an unreadable checkpoint out of the manager's way, keeping it."""
    source = os.path.join(self._workdir, CHECKPOINT_DIR, str(step))
    target = os.path.join(self._workdir, CORRUPT_DIR, str(step))
    logging.warning('Checkpoint at step %d does not load (%s: %s); moved to %s '
                    'and falling back to the previous one.', step,
                    type(error).__name__, str(error)[:200], target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(source, target)
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()
