"""`python -m lettercnn.report SWEEP_DIR`: a sweep's tables and plots.

See `lettercnn.sweep.report`.
"""

import os
import sys

if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # pylint: disable=g-import-not-at-top
  from lettercnn.sweep import report
  sys.exit(report.main())
