"""The default comparison: every optimizer on a small GPT, Python's stdlib.

quantmuon-compare --config configs/compare.py --workdir /tmp/compare

A 3-block, width-128 byte-level GPT (0.67M parameters, context 64) trained
for 300 steps of 32 windows on the Python standard library's source. Sized
to finish within 15 minutes on a 2-core CPU for all seven optimizers plus
``muon_rms``, the full-precision twin of the quantized presets (same
consistent-RMS scaling and rate), which separates the cost of quantization
from the choice of scaling rule. Measured: 10.2 minutes for all eight on a
2-core x86_64 CPU shared with other jobs (jax 0.10.2, 2026-11-26). Add
``--config.seeds=0,1,2`` for mean and spread (three times as long; with
three seeds, seed-to-seed spread of the gaps was 0.2-0.9 points).
"""

from quantmuon.experiments import defaults


def get_config():
  """The config of ``quantmuon-compare``."""
  config = defaults.base_config()
  config.optimizers = ",".join((
      "adamw", "muon", "muon_rms", "muon_8bit", "muon_8bit_dynamic",
      "muon_4bit", "muonq", "muon_grasp", "muon_lowbit", "muon_lowbit_2bit"))
  config.model = defaults.lm_model(context=64, width=128, depth=3, heads=4)
  config.train.steps = 300
  config.train.batch_size = 32
  config.train.eval_every = 25
  config.train.eval_batches = 8
  config.optimizer.warmup_steps = 30
  config.learning_rates = defaults.learning_rates(
      adamw=1.5e-3, muon=0.04, muon_rms=0.012)
  config.lr_note = (
      "swept with this config, seed 0, on a 2-core CPU: final validation "
      "loss for rates x0.5, x1, x2, x4, x8 of adamw 3e-3, muon 0.02 and "
      "muon_rms 3e-3, plus adamw 5e-4 and 1e-3. Best: adamw 1.5e-3 "
      "(2.095; 1e-3: 2.152, 3e-3: 2.173), muon 0.04 (1.633; 0.02: 1.636, "
      "0.08: 1.827), muon_rms 0.012 (1.590; 6e-3: 1.654, 0.024: 1.621). "
      "The quantized presets use consistent-RMS scaling and share "
      "muon_rms's rate; width-scaled muon's AdamW part uses adamw's. "
      "Rerun around these values with --config.lr_sweep=0.5,1,2.")
  return config
