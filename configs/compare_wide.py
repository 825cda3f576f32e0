"""The comparison at twice the width: a width-256 GPT.

quantmuon-compare --config configs/compare_wide.py --workdir /tmp/wide

The data, batch and rates of ``configs/compare_full.py`` on a 2-block,
width-256 byte-level GPT (context 64) trained for 250 steps, so that the
quantized presets' matrices (256 x 256 and 256 x 1024) are twice as wide.
Each quantized optimizer runs beside its exact full-precision twin. Add
``--config.seeds=0,1,2`` for mean and spread, or
``--config.optimizers=muon_lowbit`` for one preset and its twin.
"""

from quantmuon_experiments import defaults


def get_config():
  """The wide config of ``quantmuon-compare``."""
  config = defaults.full_config()
  config.model = defaults.lm_model(context=64, width=256, depth=2, heads=4)
  config.train.steps = 250
  config.eta.update(setup_s=0.0, step_s=0.0)  # not measured: as it runs
  return config
