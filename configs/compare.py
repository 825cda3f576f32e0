"""The default comparison: every optimizer on a small GPT, Python's stdlib.

quantmuon-compare --config configs/compare.py --workdir /tmp/compare

A 3-block, width-128 byte-level GPT (0.67M parameters, context 64) trained
for 300 steps of 32 windows on the Python standard library's source, with
AdamW, width-scaled Muon, ``muon_rms`` (full-precision Muon with the
quantized presets' consistent-RMS scaling and rate) and the seven quantized
optimizers, each beside its exact full-precision twin (``NAME_fp32``; twins
that build the same optimizer run once: 14 runs). Measured: 29.2 minutes on
a 2-core x86_64 CPU shared with other jobs (jax 0.10.2, 2026-12-01). Add
``--config.seeds=0,1,2`` for mean and spread (three times as long), or
``--config.twins=False`` to leave the twins out."""

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
