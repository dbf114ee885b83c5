"""lr_find's workdir: the files lr_find owns there, and the folders it refuses.

lr_find writes lr_find.json, lr_find.png and TensorBoard event files whose
names end in EVENT_SUFFIX, and a rerun replaces those alone. A folder that
holds anything else TensorBoard or a training run reads (status.json,
checkpoints/, best_checkpoint/, event files without the suffix: a training
run's, a sweep's) is refused before any data is built: lr_find neither
deletes what it did not write nor mixes its curves into a run's.
"""

import glob
import os

from lettercnn import errors
from lettercnn.run import events
from lettercnn.run import status as run_status

# The end of every event file lr_find writes; no other writer uses it.
EVENT_SUFFIX = '.lettercnn_lr_find'
# How many foreign names the refusal lists before it counts the rest.
_NAMES_SHOWN = 3


def own_event_files(workdir: str) -> list[str]:
  """The paths of the event files lr_find wrote into `workdir`, sorted."""
  return sorted(glob.glob(
      os.path.join(workdir, events.EVENT_FILE_PATTERN + EVENT_SUFFIX)))


def foreign_files(workdir: str) -> list[str]:
  """What `workdir` holds of a training run or another event writer.

  The names, folders with a trailing '/': status.json, checkpoints/,
  best_checkpoint/, and every event file lr_find did not write.
  """
  # pylint: disable-next=g-import-not-at-top
  from lettercnn.run import checkpoints  # Imports orbax: only when asked.
  found = [name for name in (run_status.STATUS_FILE,)
           if os.path.lexists(os.path.join(workdir, name))]
  found += [name + '/' for name in (checkpoints.CHECKPOINT_DIR,
                                    checkpoints.BEST_DIR)
            if os.path.lexists(os.path.join(workdir, name))]
  own = set(own_event_files(workdir))
  found += [os.path.basename(path) for path in sorted(glob.glob(
      os.path.join(workdir, events.EVENT_FILE_PATTERN))) if path not in own]
  return found


def check(workdir: str) -> None:
  """Refuses a `workdir` that holds files lr_find did not write.

  Raises:
    errors.InputError: `foreign_files` finds any; the message names them and
      suggests a folder of lr_find's own inside it.
  """
  foreign = foreign_files(workdir)
  if not foreign:
    return
  shown = ', '.join(foreign[:_NAMES_SHOWN]) + (
      f' and {len(foreign) - _NAMES_SHOWN} more'
      if len(foreign) > _NAMES_SHOWN else '')
  raise errors.InputError(
      f'workdir {workdir} holds files lr_find did not write ({shown}), which '
      'it neither deletes nor mixes its curves into; pass a folder of its '
      f'own, such as --workdir={os.path.join(workdir, "lr_find")}')
