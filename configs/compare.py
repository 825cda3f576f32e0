"""The default comparison: every optimizer on a small GPT, Python's stdlib.

quantmuon-compare --config configs/compare.py --workdir /tmp/compare

Sized to finish within 15 minutes on a 2-core CPU for all seven optimizers.
Learning rates: see ``lr_note`` below; rerun the sweep with
``--config.lr_sweep=0.5,1,2``.
"""

from quantmuon.experiments import defaults


def get_config():
  """The config of ``quantmuon-compare``."""
  config = defaults.base_config()
  config.train.steps = 300
  config.train.eval_every = 50
  config.train.eval_batches = 8
  config.optimizer.warmup_steps = 30
  config.learning_rates = defaults.learning_rates(
      adamw=3e-3, muon=0.02, muon_rms=3e-3)
  config.lr_note = "not swept yet"
  return config
