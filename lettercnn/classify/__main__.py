"""`python -m lettercnn.classify`: see `lettercnn.classify.classify`."""

from absl import app

from lettercnn import config_loading
from lettercnn.classify import classify

if __name__ == '__main__':
  classify.define_flags()
  app.run(classify.main,
          flags_parser=config_loading.flags_parser('classify'))
