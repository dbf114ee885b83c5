"""Test setup: two simulated CPU devices, set before JAX is first imported."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
