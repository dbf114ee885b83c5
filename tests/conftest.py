"""Test setup: two simulated CPU devices, set before JAX is first imported."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import atexit
import shutil
import tempfile

# JAX's persistent compilation cache, shared by this session's process and
# every run it starts (they inherit the environment): the suite launches
# dozens of runs of the same tiny configs, and each would otherwise compile
# the same programs again (about 6 s a run on 2 cores). A cache entry is keyed
# by the program, the JAX version and the compile options, so a run gets the
# executable it would have compiled itself. One fresh folder per session.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _jax_cache = tempfile.mkdtemp(prefix='lettercnn-test-jax-cache-')
  atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _jax_cache
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import importlib.util
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_config(stem: str):
  """get_config() of configs/<stem>.py (stems like lr_1e-4 are no module names)."""
  path = REPO_ROOT / 'configs' / f'{stem}.py'
  spec = importlib.util.spec_from_file_location(stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
  """One TFDS data dir per test session, so tiny datasets are built once."""
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture
def tiny_config(data_dir):
  """The default config shrunk to seconds: 8 images per letter, 2 epochs."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.data_dir = data_dir
  config.examples_per_class = 8
  config.num_epochs = 2
  config.log_every_steps = 10
  config.eval_batch_size = 16
  return config


@pytest.fixture
def reads(monkeypatch) -> list[int]:
  """The examples read from the dataset files from now on, by label."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from lettercnn.data import input_pipeline  # pylint: disable=g-import-not-at-top
  read = []
  preprocess = input_pipeline.preprocess

  def record(label):
    read.append(int(label))
    return label

  def counting_preprocess(dataset, *args):
    counted = dataset.map(lambda e: {**e, 'label': tf.ensure_shape(
        tf.py_function(record, [e['label']], tf.int64), [])})
    return preprocess(counted, *args)

  monkeypatch.setattr(input_pipeline, 'preprocess', counting_preprocess)
  return read
