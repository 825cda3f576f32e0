"""One training run: a small GPT on Python's standard-library source.

quantmuon-train --config configs/train.py --workdir /tmp/run \\
    --config.optimizer.name=muonq

The same config is what ``quantmuon-train`` runs without ``--config``.
"""

from quantmuon_experiments import defaults


def get_config():
  """The config of ``quantmuon-train``."""
  return defaults.train_config()
