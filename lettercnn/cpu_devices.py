"""How many XLA host devices a run on CPU splits its batch over.

XLA:CPU runs each operation of a training step on one thread: two cores
overlap at most two independent operations (a convolution's weight and input
gradients, say). Split over two host devices, each core trains its share of
the batch through the whole step, and the pmap-ed step averages the shares'
gradients as it does over accelerators. That pays only for large shares: the
devices meet once a step to average, and two cores then stream their patch
matrices at once, so a device takes at least `MIN_IMAGES_PER_DEVICE`
(measured in docs/performance.md, "Batch 128 on two host devices").

The count is `config.cpu_devices` and that rule, not the machine's core
count: how a batch is split decides how its gradient is summed, so a run
rounds the same on any machine, pinned to one core or not.
"""

import os
import re
from typing import Sequence

import jax
import ml_collections

from lettercnn import config_checks

# The smallest share of a batch worth a device of its own (see above).
MIN_IMAGES_PER_DEVICE = 64
_FORCED_COUNT = re.compile(r'--xla_force_host_platform_device_count=(\d+)')


def count_for(batch_size: int, cpu_devices: int) -> int:
  """The most devices, up to `cpu_devices`, that `batch_size` divides over.

  Each takes at least MIN_IMAGES_PER_DEVICE images; a smaller batch (and
  one that no such count divides) trains on one device.
  """
  return max(n for n in range(1, cpu_devices + 1)
             if batch_size % n == 0
             and (n == 1 or batch_size // n >= MIN_IMAGES_PER_DEVICE))


def forced_count() -> int | None:
  """The host device count XLA_FLAGS forces, if it forces one."""
  found = _FORCED_COUNT.findall(os.environ.get('XLA_FLAGS', ''))
  return int(found[-1]) if found else None


def start(config: ml_collections.ConfigDict,
          batch_sizes: Sequence[int] = ()) -> None:
  """Starts JAX's CPU backend with the devices `config.batch_size` takes.

  With `batch_sizes` (several runs in one process, as the benchmark's), the
  most devices any of them takes; each run then uses its own `count_for`.
  Call before anything starts a JAX backend. A device count that XLA_FLAGS
  forces (`--xla_force_host_platform_device_count`, as the tests simulate
  several devices) stands. main does not call this in a multi-process run,
  whose processes keep JAX's one CPU device each unless XLA_FLAGS says
  otherwise.

  Raises:
    InputError: `config.cpu_devices` is not an integer >= 1.
  """
  config_checks.check_cpu_devices(config)
  # (A bad batch size is check_config's to report.)
  batch_sizes = [b for b in (*batch_sizes, config.batch_size)
                 if isinstance(b, int) and b > 0]
  if forced_count() is None and batch_sizes:
    jax.config.update('jax_num_cpu_devices', max(
        count_for(b, config.cpu_devices) for b in batch_sizes))
