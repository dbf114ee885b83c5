"""`python -m lettercnn.sweep SWEEP_DIR ARGS...`: see lettercnn.sweep.launch."""

import sys

from lettercnn.sweep import launch

if __name__ == '__main__':
  sys.exit(launch.main(sys.argv[1:]))
