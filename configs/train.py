"""One training run: a small GPT on Python's standard-library source.

quantmuon-train --config configs/train.py --workdir /tmp/run \
    --config.optimizer.name=muonq
"""

from quantmuon_experiments import defaults


def get_config():
  """The config of ``quantmuon-train``."""
  config = defaults.base_config()
  config.train.steps = 300
  config.train.checkpoint_every = 100
  config.optimizer.name = "muon_8bit"
  config.optimizer.learning_rate = 3e-3
  return config
