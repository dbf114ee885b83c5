"""Keeps libraries' INFO chatter out of lettercnn's log."""

import logging as python_logging
import os

from absl import logging


# A warning orbax logs for every read-only CheckpointManager, which is what
# `checkpointing.CheckpointReader` asks for.
_READ_ONLY_NOTICE = 'Given directory is read only'


def _keep(record: python_logging.LogRecord) -> bool:
  if os.sep + 'orbax' + os.sep not in record.pathname:
    return True
  return (record.levelno >= python_logging.WARNING
          and not str(record.msg).startswith(_READ_ONLY_NOTICE))


def quiet_orbax() -> None:
  """Drops orbax's INFO lines (a dozen per save or restore) and its notice of
  read-only managers; keeps its other warnings."""
  logging.get_absl_handler().addFilter(_keep)
