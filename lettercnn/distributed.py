"""Multi-process runs: starting jax.distributed, and agreeing across processes.

Opt-in with `lettercnn.main --distributed`. Every process runs the same
command; `jax.distributed.initialize` connects them, reading the coordinator,
the process count and this process's index from --coordinator_address,
--num_processes and --process_id, or, where those are not given, from the
cluster's environment (SLURM, Cloud TPU, ...), as JAX detects it. CPU
processes exchange gradients over gloo.

What stays on process 0 (the primary): the workdir's lock, status.json,
TensorBoard events, the mean file and every message the user reads. The
others train, save their part of each checkpoint (orbax's own multi-process
protocol) and otherwise keep quiet.

A bad input must stop every process, not just the one that saw it, and never
leave the others waiting: `agreed` shares each process's outcome of a step
with the others (`multihost_utils.process_allgather`), so all raise the same
error. A process that dies instead (a crash, SIGKILL) stops sending
heartbeats, and the coordination service aborts the others within
`HEARTBEAT_TIMEOUT_S`. A process that ends waits for the others at exit for
at most `SHUTDOWN_TIMEOUT_S`, then exits alone, which fails any collective
that another is still waiting in.
"""

import atexit
import json
import logging as python_logging
import os
import sys
import threading
from typing import Any, Callable, TypeVar

from absl import logging
import jax
from jax import lax
import numpy as np

from lettercnn import errors

_T = TypeVar('_T')

# How long the coordination service waits for a silent process before it
# aborts the others: a dead process stops them within about this time.
HEARTBEAT_TIMEOUT_S = 20
# How long a process that ends waits in jax.distributed's shutdown barrier
# for the others to end too, before it exits alone with one error line (its
# exit then fails the collective that any other is stuck in).
SHUTDOWN_TIMEOUT_S = 30
# The coordination service's own limit on that barrier, past which it aborts
# every process with a stack dump: later than ours, so ours comes first.
_SERVICE_SHUTDOWN_TIMEOUT_S = 2 * SHUTDOWN_TIMEOUT_S

class RemoteInputError(errors.InputError):
  """Another process's InputError, raised here so that every process stops."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


def initialize(coordinator_address: str | None, num_processes: int | None,
               process_id: int | None) -> None:
  """Starts jax.distributed; call before JAX runs anything.

  Arguments left None are read from the cluster's environment.

  Raises:
    errors.InputError: the processes could not connect.
  """
  try:
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
        shutdown_timeout_seconds=_SERVICE_SHUTDOWN_TIMEOUT_S)
  except (RuntimeError, ValueError) as e:
    reason = ' '.join(str(e).split())[:300]
    raise errors.InputError(
        f'--distributed: cannot start jax.distributed ({reason})') from e
  # Registered after JAX's own exit handler, so it runs first, and that
  # handler's shutdown then has nothing left to do.
  atexit.register(_shut_down_within, SHUTDOWN_TIMEOUT_S)
  if not is_primary():
    # Progress and results are process 0's to print; warnings still show.
    logging.set_verbosity(logging.WARNING)


# The package's own folder: its modules' log lines are the console's.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# clu's progress line (`periodic_actions.ReportProgress` logs it there).
_PROGRESS_LOGGER = os.path.join('clu', 'platform', 'local.py')
# A warning orbax logs for every read-only CheckpointManager, which is what
# `checkpoints.CheckpointReader` asks for.
_READ_ONLY_NOTICE = 'Given directory is read only'


def _on_console(record: python_logging.LogRecord) -> bool:
  if record.pathname.startswith(_PACKAGE_DIR):
    return True
  if record.levelno < python_logging.WARNING:
    return record.pathname.endswith(_PROGRESS_LOGGER)
  return not str(record.msg).startswith(_READ_ONLY_NOTICE)


def quiet_libraries() -> None:
  """Keeps the log to what a person watches: lettercnn's own lines, clu's
  progress line, and the libraries' warnings and errors (less orbax's notice
  of read-only checkpoint managers). absl's --verbosity=1 (-v 1) keeps
  everything.
  """
  if not logging.vlog_is_on(1):
    logging.get_absl_handler().addFilter(_on_console)


def _shut_down_within(timeout_s: float) -> None:
  """Leaves jax.distributed at exit, or exits FAILED after `timeout_s`.

  jax.distributed's shutdown is a barrier of every process. A process whose
  peer never reaches it (stuck in a collective that this process left, or
  still running) prints one line and exits without it.
  """
  done = threading.Event()

  def shut_down():
    try:
      jax.distributed.shutdown()
    finally:
      done.set()

  threading.Thread(target=shut_down, daemon=True).start()
  if not done.wait(timeout_s):
    print(f'lettercnn: error: process {jax.process_index()} ended, but the '
          f'other processes of this run did not end within {timeout_s:g} s '
          '(one is stuck or still training): exiting without them',
          file=sys.stderr, flush=True)
    os._exit(errors.FAILED)  # pylint: disable=protected-access


def is_primary() -> bool:
  """Whether this process writes the run's files and messages (process 0)."""
  return jax.process_index() == 0


def say(message: str) -> None:
  """Prints `message` to stdout, on process 0 only."""
  if is_primary():
    print(message, flush=True)


def launch_index(argv: list[str]) -> int:
  """This process's index as its command line or SLURM gives it, or 0.

  For reporting a bad command line once, before jax.distributed is started.
  """
  if not any(a in ('--distributed', '-distributed') for a in argv):
    return 0
  for arg in argv:
    if arg.startswith(('--process_id=', '-process_id=')):
      value = arg.split('=', 1)[1]
      return int(value) if value.isdigit() else 0
  value = os.environ.get('SLURM_PROCID', '0')
  return int(value) if value.isdigit() else 0


def print_error(program: str, error: Exception) -> None:
  """Prints `error` as one line, on process 0 only."""
  if is_primary():
    print(f'{program}: error: {error}', file=sys.stderr, flush=True)


def agreed(fn: Callable[[], _T], primary_only: bool = False) -> _T:
  """Runs `fn` and makes its outcome every process's.

  Each process runs `fn` (only process 0 with `primary_only`, whose result,
  which must be JSON, every process then returns). If `fn` raised an
  InputError on any process, every process raises it (that of the lowest
  failing process, with its exit code), so they all stop together. Every
  process must call `agreed` at the same points of the run.
  """
  if jax.process_count() == 1:
    return fn()
  result, error = None, None
  if is_primary() or not primary_only:
    try:
      result = fn()
    except errors.InputError as e:
      error = e
  outcomes = [json.loads(text) for text in _exchange(json.dumps({
      'error': None if error is None else str(error),
      'exit_code': None if error is None else errors.exit_code(error),
      'result': result if primary_only and is_primary() else None}))]
  failed = [o for o in outcomes if o['error'] is not None]
  if failed:
    if error is not None:
      raise error
    raise RemoteInputError(failed[0]['error'], failed[0]['exit_code'])
  return outcomes[0]['result'] if primary_only else result


def _exchange(text: str) -> list[str]:
  """Every process's `text`, in process order (a collective)."""
  data = np.frombuffer(text.encode(), np.uint8)
  sizes = [int(size[0]) for size in gather_hosts(np.array([data.size]))]
  padded = np.zeros(max(sizes), np.uint8)
  padded[:data.size] = data
  return [bytes(part[:size]).decode()
          for part, size in zip(gather_hosts(padded), sizes)]


def run_devices(num_devices: int) -> list[jax.Device]:
  """The devices a run trains on, in the order of its batches' rows.

  This process's first `num_devices`; in a multi-process run, every
  process's devices (`num_devices` is then all of them).
  """
  if jax.process_count() == 1:
    return jax.local_devices()[:num_devices]
  return jax.devices()


def local_rows(devices: list[jax.Device]) -> tuple[int, ...]:
  """The positions of this process's devices in `devices`."""
  return tuple(i for i, d in enumerate(devices)
               if d.process_index == jax.process_index())


def local_devices(devices: list[jax.Device]) -> list[jax.Device]:
  """This process's devices of `devices`, in their order."""
  return [devices[i] for i in local_rows(devices)]


def unreplicate(tree: Any) -> Any:
  """This process's first device's copy of a pmap-replicated `tree`.

  flax's `jax_utils.unreplicate` keeps the device axis of an array that one
  device of several holds (a one-device mesh counts as fully replicated), as
  a run with num_devices=1 on a machine of two devices has it; this drops it
  always. Host (numpy) arrays give their first row.
  """

  def first(x):
    if not isinstance(x, jax.Array):
      return x[0]
    return x.addressable_shards[0].data.reshape(x.shape[1:])

  return jax.tree.map(first, tree)


def gather_hosts(tree: Any) -> list[Any]:
  """Every process's `tree` of host arrays, in process order (collective)."""
  if jax.process_count() == 1:
    return [tree]
  # pylint: disable-next=g-import-not-at-top
  from jax.experimental import multihost_utils
  stacked = multihost_utils.process_allgather(tree)
  return [jax.tree.map(lambda x, i=i: np.asarray(x[i]), stacked)
          for i in range(jax.process_count())]


def gather_device_rows(tree: Any, devices: list[jax.Device]) -> Any:
  """Host arrays of every device of `devices`, from this process's rows.

  `tree`'s leaves hold one row per local device (as `jax.device_get` of a
  pmap-ed result gives them); the result's, one per device of `devices`, in
  its order. A collective in a multi-process run.
  """
  if jax.process_count() == 1:
    return tree
  rows = [i for index in range(jax.process_count())
          for i, d in enumerate(devices) if d.process_index == index]
  order = np.argsort(rows)
  return jax.tree.map(lambda *parts: np.concatenate(parts)[order],
                      *gather_hosts(tree))


class StopVote:
  """Agrees between steps whether any process got a stop signal (collective).

  Each process passes the signal number it got (0 for none); all get the
  largest. A process alone may not stop: the others would wait for it in
  the next step's gradient mean.
  """

  def __init__(self, devices: list[jax.Device]):
    self._local = local_devices(devices)
    self._vote = jax.pmap(lambda signum: lax.pmax(signum, 'processes'),
                          axis_name='processes', devices=devices)

  def __call__(self, signum: int) -> int:
    votes = self._vote(np.full((len(self._local),), signum, np.int32))
    return int(np.asarray(jax.device_get(votes))[0])
