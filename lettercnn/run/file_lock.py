"""`flock` on a lock file, robust to the file being removed while it is held.

The kernel releases an `flock` when its holder exits however it exits
(SIGKILL included), so a killed process never leaves a lock behind. A lock
file may still be removed, by its holder letting go or by hand, while another
process waits on it: that process would then hold a lock on a file nobody
else can open, and a third process would lock a new file at the same path.
`acquire` therefore checks, once it holds the lock, that the file it locked
is still the one at the path, and starts again if not.
"""

import fcntl
import os


def acquire(path: str, blocking: bool) -> int | None:
  """An fd holding an exclusive lock on the file at `path` (created if need be).

  Returns None if `blocking` is False and another process holds the lock;
  with `blocking`, waits for it. Raises OSError if the file cannot be made.
  """
  flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, flags)
    except BlockingIOError:
      os.close(fd)
      return None
    try:
      if os.fstat(fd).st_ino == os.stat(path).st_ino:
        return fd
    except FileNotFoundError:
      pass
    os.close(fd)
