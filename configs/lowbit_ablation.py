"""The variants ``muon_lowbit`` was chosen from, each beside its exact
full-precision twin.

quantmuon-compare --config configs/lowbit_ablation.py --workdir /tmp/ablation

The model, data, steps and rate of ``configs/compare_full.py``. Variants: the
recipe (k = min(m, n) // 20), k = min(m, n) // 16 and // 8, Nesterov off,
and the 2-bit residual at k // 20 and // 8. Twins that build the same
optimizer run once, so the four rank variants share one twin. Add
``--config.train.steps=1500`` for the long horizon.
"""

from quantmuon_experiments import defaults


def get_config():
  """The ablation config of ``quantmuon-compare``."""
  config = defaults.full_config()
  config.optimizers = ",".join((
      "muon_lowbit", "muon_lowbit_rank16", "muon_lowbit_rank8",
      "muon_lowbit_no_nesterov", "muon_lowbit_2bit",
      "muon_lowbit_2bit_rank8"))
  return config
