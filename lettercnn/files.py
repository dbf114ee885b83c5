"""Files written atomically: a reader sees the old file or the new, never half.

The new content goes to a temporary file beside the target, on the same file
system, which `os.replace` then renames over the target. A write that fails
leaves the target as it was and removes the temporary file.
"""

import contextlib
import os
from typing import Iterator

TEMP_SUFFIX = '.tmp'


@contextlib.contextmanager
def atomic_path(path: str, temp_path: str | None = None) -> Iterator[str]:
  """Yields a temporary path to write; on a clean exit it replaces `path`.

  `temp_path` defaults to PATH.tmp and must be on `path`'s file system.
  When the block raises, the temporary file is removed (as far as it can be)
  and `path` is unchanged.
  """
  temp_path = path + TEMP_SUFFIX if temp_path is None else temp_path
  try:
    yield temp_path
    os.replace(temp_path, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(temp_path)
    raise


def atomic_write_text(path: str, text: str) -> None:
  """Replaces `path` by a file holding `text`, through PATH.tmp."""
  with atomic_path(path) as temp_path:
    with open(temp_path, 'w') as f:
      f.write(text)
