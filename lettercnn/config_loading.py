"""Config files and --config.FIELD=VALUE overrides, parsed as lettercnn.main does.

lettercnn.main parses its command line with `parse_config_flags`;
lettercnn.sweep.grid builds each point's config with `load_config`, so that a
sweep reports a bad point in the same words, before it starts any run.
"""

import importlib.util
import os
import re
import sys
import traceback
from typing import Callable

from absl import flags
import ml_collections
from ml_collections import config_flags

from lettercnn import errors
from lettercnn.optim import schedules


def _one_line(error: BaseException) -> str:
  """`error`'s message with its lines joined: an error is one line."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  return ' '.join(lines) or type(error).__name__


def _line_in(path: str, error: BaseException) -> int | None:
  """The line of `path` that the innermost frame of `error` in it ran."""
  target = os.path.realpath(path)
  line = None
  for frame, lineno in traceback.walk_tb(error.__traceback__):
    if os.path.realpath(frame.f_code.co_filename) == target:
      line = lineno
  return line


def _where(path: str, error: BaseException) -> str:
  line = _line_in(path, error)
  return f'config file {path!r}' + (f', line {line}' if line else '')


def _syntax_error_message(path: str, error: SyntaxError) -> str:
  """Names the file and line of the syntax error and Python's message."""
  same = (error.filename is not None and
          os.path.realpath(error.filename) == os.path.realpath(path))
  at = f'line {error.lineno}' if same else f'{error.filename}, line {error.lineno}'
  return f'config file {path!r} has a syntax error at {at}: {error.msg}'


def _loading_error(path: str, error: Exception, doing: str = '') -> str:
  """Why running the config file `path` (`doing`: its get_config) failed."""
  if isinstance(error, SyntaxError):
    return _syntax_error_message(path, error)
  if isinstance(error, ModuleNotFoundError):
    return (f'{_where(path, error)}: {doing}imports module {error.name!r}, '
            'which cannot be found (not installed, or not on the path: run '
            'from the repository root)')
  raised = 'raised ' if doing else ''
  return (f'{_where(path, error)}: {doing}{raised}{type(error).__name__}: '
          f'{_one_line(error)}')


def _config_file_error(path: str) -> str | None:
  """Why `path` cannot be a config file, or None when it gives a config.

  Runs the file and its get_config() once, as config_flags will, so that any
  failure is named here in one line: file, line and reason.
  """
  if not os.path.isfile(path):
    return f'config file {path!r} does not exist'
  spec = importlib.util.spec_from_file_location('lettercnn_config_file', path)
  if spec is None or spec.loader is None:
    return f'config file {path!r} is not a Python file'
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    return _loading_error(path, e)
  get_config = getattr(module, 'get_config', None)
  if not callable(get_config):
    return f'config file {path!r} does not define get_config()'
  try:
    config = get_config()
  except Exception as e:  # pylint: disable=broad-except
    return _loading_error(path, e, doing='get_config() ')
  if not isinstance(config, ml_collections.ConfigDict):
    returned = 'None' if config is None else f'a {type(config).__name__}'
    return (f'config file {path!r}: get_config() returned {returned}, not an '
            'ml_collections.ConfigDict (a missing return statement?)')
  return None


def _unknown_field_message(error: Exception) -> str:
  """ml_collections' locked-config error, as one line naming the field."""
  text = str(error).replace('\\', '')
  field = re.search(r'[\'"]([A-Za-z_][\w.]*)[\'"]', text)
  suggestion = re.search(r'Did you mean "([\w.]+)"', text)
  message = (f'unknown config field {field.group(1) if field else text!r} '
             '(see configs/default.py)')
  if suggestion:
    message += f'; did you mean {suggestion.group(1)!r}?'
  return message


def _config_paths(argv: list[str]) -> list[str]:
  """The values of --config in `argv`, as `--config=PATH` or `--config PATH`."""
  paths = []
  for i, arg in enumerate(argv):
    if arg.startswith(('--config=', '-config=')):
      paths.append(arg.split('=', 1)[1])
    elif arg in ('--config', '-config') and i + 1 < len(argv):
      paths.append(argv[i + 1])
  return paths


def parse_config_flags(argv: list[str],
                       flag_values: flags.FlagValues) -> list[str]:
  """Parses `argv` into `flag_values`; returns the arguments left over.

  The config's learning-rate policy fields left None are then resolved to
  the policy's defaults (`schedules.resolve_defaults`).

  Raises:
    errors.InputError: a bad config file, field or value, in one line.
  """
  config_paths = _config_paths(argv)
  problem = next(filter(None, map(_config_file_error, config_paths)), None)
  if problem is not None:
    raise errors.InputError(problem)
  try:
    remaining = flag_values(argv)
  except flags.Error as e:
    raise errors.InputError(str(e).splitlines()[0]) from e
  except (AttributeError, KeyError) as e:
    raise errors.InputError(_unknown_field_message(e)) from e
  except (TypeError, ValueError) as e:
    raise errors.InputError(f'bad config override: {e}') from e
  config = flag_values['config'].value if 'config' in flag_values else None
  if isinstance(config, ml_collections.ConfigDict):
    # The chosen policy's defaults, into the fields the config file and the
    # overrides left None: what the run records and checks.
    schedules.resolve_defaults(config)
  return remaining


def load_config(config_path: str,
                overrides: list[str]) -> ml_collections.ConfigDict:
  """The config `lettercnn.main --config=config_path *overrides` trains with.

  Raises:
    errors.InputError: as lettercnn.main reports a bad file, field or value.
  """
  argv = ['lettercnn.main', f'--config={config_path}', *overrides]
  flag_values = flags.FlagValues()
  # config_flags reads the overrides from sys_argv, not from the parsed argv.
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                  flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  parse_config_flags(argv, flag_values)
  return flag_values.config


def default_workdir(config_path: str, root: str = 'runs') -> str:
  """`root` and the config file's path below configs/, less '.py'.

  runs/lr_1e-4 for configs/lr_1e-4.py, runs/tf/lr_1e-4 for
  configs/tf/lr_1e-4.py (so presets of two setups never share a workdir),
  runs/<stem> for a file elsewhere.
  """
  path = os.path.splitext(os.path.normpath(config_path))[0]
  parts = path.split(os.sep)
  if 'configs' in parts[:-1]:
    index = len(parts) - 1 - parts[::-1].index('configs')
    return os.path.join(root, *parts[index + 1:])
  return os.path.join(root, parts[-1])


def define_config_flag() -> None:
  """Defines --config, required: an experiment config file, fields locked."""
  config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file (configs/*.py).',
      lock_config=True)
  flags.mark_flags_as_required(['config'])


def flags_parser(program: str,
                 quiet: bool = False) -> Callable[[list[str]], list[str]]:
  """absl's `flags_parser` for `program`: a bad flag or config is one line,
  exit `errors.BAD_INPUT`.

  `quiet` exits without the line: for the processes of a multi-process job
  other than process 0, which prints it.
  """

  def parse(argv: list[str]) -> list[str]:
    try:
      return parse_config_flags(argv, flags.FLAGS)
    except errors.InputError as e:
      if not quiet:
        print(f'{program}: error: {e}', file=sys.stderr)
      sys.exit(errors.exit_code(e))

  return parse
