"""lettercnn: how the hyperparameters of a CNN decide whether it trains.

TensorFlow only feeds data here (decoding, resizing, colour conversion), so
its oneDNN custom operations stay off unless the environment asks for them:
they change none of those results (the pipelines' arrays are bit-identical
either way) and, on, TensorFlow prints two notices of them at import.
"""

import os

os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
