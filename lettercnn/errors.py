"""The one exception type for bad user input."""


class InputError(ValueError):
  """A config value, file or folder the user gave is unusable.

  `lettercnn.main` prints its message as a single line and exits non-zero, so
  the message must name the offending value or path and say what is wrong.
  """
