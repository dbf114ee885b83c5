"""Running `lettercnn.main` on a tiny config in a subprocess, and reading its workdir.

Shared by the tests that stop, break and resume real runs.
"""

import concurrent.futures
import glob
import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO_ROOT

TINY_RUN = ['--config.examples_per_class=40', '--config.num_epochs=4',
            '--config.batch_size=2',  # Over the two simulated devices.
            '--config.log_every_steps=70', '--config.eval_batch_size=50']


def command(workdir, data_dir, *overrides):
  """`python -m lettercnn.main` of TINY_RUN, then `overrides`."""
  return [sys.executable, '-m', 'lettercnn.main',
          '--config=configs/lr_1e-4.py', f'--workdir={workdir}',
          f'--config.data_dir={data_dir}', *TINY_RUN, *overrides]


def run_main(workdir, data_dir, fault='', overrides=(), env=None):
  """Runs `command` to its end; returns (exit code, pid, stderr).

  `fault` is Python run first in the process, to break it on purpose; `env`
  updates the environment.
  """
  args = command(workdir, data_dir, *overrides)
  if fault:
    args[1:3] = ['-c', textwrap.dedent(fault) + textwrap.dedent("""
        import runpy, sys
        sys.argv = ['lettercnn.main'] + sys.argv[1:]
        runpy.run_module('lettercnn.main', run_name='__main__')
        """)]
  process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **(env or {})})
  _, stderr = process.communicate()
  return process.returncode, process.pid, stderr


def finish(workdir, data_dir, overrides=()):
  """Runs `command` to a successful end; returns (pid, stderr)."""
  exit_code, pid, stderr = run_main(workdir, data_dir, overrides=overrides)
  assert exit_code == 0, stderr[-3000:]
  return pid, stderr


def scalar_steps(event_file, tag):
  """The steps at which `event_file` holds scalar `tag`."""
  from tensorboard.backend.event_processing import event_file_loader  # pylint: disable=g-import-not-at-top
  return [event.step
          for event in event_file_loader.EventFileLoader(event_file).Load()
          for value in event.summary.value if value.tag == tag]


def assert_resumed_from(workdir, pid, stderr, step):
  """The process `pid` restored the checkpoint at `step` and trained on.

  Its log names the step, and its own event file (clu names it by pid)
  logs nothing at or before `step`: no epoch before it was run again.
  """
  assert f'Resuming from the checkpoint at step {step}.' in stderr, (
      stderr[-3000:])
  assert 'corrupt' not in stderr
  [event_file] = glob.glob(os.path.join(workdir, f'*.{pid}.*.v2'))
  train_steps = scalar_steps(event_file, 'train_loss')
  assert train_steps and min(train_steps) > step, (step, train_steps)
  val_steps = scalar_steps(event_file, 'val_accuracy')
  assert val_steps and min(val_steps) > step, (step, val_steps)


def read_status(workdir):
  with open(os.path.join(workdir, 'status.json')) as f:
    return json.load(f)


def finished_checkpoints(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return [d for d in os.listdir(directory) if d.isdigit()]


def run_selected_cases(request, test_name, param, run):
  """{value: run(value)} for `param` of each selected case of `test_name`.

  For a module-scoped fixture (`request`) of a parametrized test whose cases
  each start one short process: the cases selected in its module (all, or
  those -k picks) run theirs two at a time, for one process spends its few
  seconds on single-threaded imports and checks, so one after another they
  left the second core idle. Each case then asserts on its own result.
  A list value's key is its tuple.
  """
  values = [item.callspec.params[param] for item in request.session.items
            if item.module is request.module
            and getattr(item, 'originalname', None) == test_name]
  # pytest makes its temporary root on first use, deleting whatever is there
  # (under pytest-xdist, the worker's given folder): made here, before the
  # threads, so that one thread's mktemp cannot delete the other's folder.
  request.getfixturevalue('tmp_path_factory').getbasetemp()
  workers = max(1, min(2, len(os.sched_getaffinity(0))))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return {tuple(v) if isinstance(v, list) else v: result
            for v, result in zip(values, pool.map(run, values))}


def allowed_cpus(workdir) -> set[int]:
  """The CPUs a fake sweep run was allowed, from the Cpus_allowed_list
  ("0-3,6") it wrote to WORKDIR/cpus."""
  cpus = set()
  for part in (workdir / 'cpus').read_text().strip().split(','):
    first, _, last = part.partition('-')
    cpus.update(range(int(first), int(last or first) + 1))
  return cpus
