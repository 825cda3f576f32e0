"""A second task: scikit-learn's 8x8 digits with an MLP or a CNN.

quantmuon-compare --config configs/digits.py --workdir /tmp/digits
quantmuon-compare --config configs/digits.py:cnn --workdir /tmp/digits_cnn

The hidden matrices (64 x 256, 256 x 256; for the CNN, conv kernels kept as
(9 * in, out) matrices and a 1024 x 256 dense layer) go to Muon, the output
head and biases to AdamW.
"""

from quantmuon_experiments import defaults


def get_config(kind: str = "mlp"):
  """The digits comparison; ``kind`` is ``mlp`` or ``cnn``."""
  config = defaults.base_config()
  config.task = "digits"
  config.model = defaults.digits_model(kind=kind, width=256, depth=2)
  if kind == "cnn":
    config.model.width = 64
  config.data.val_fraction = 0.2
  config.train.steps = 300
  config.train.batch_size = 64
  config.train.eval_every = 25
  config.train.eval_batches = 1
  config.optimizer.warmup_steps = 20
  config.learning_rates = defaults.learning_rates(
      adamw=0.024, muon=0.01, muon_rms=3e-3)
  config.lr_note = (
      "swept on the MLP, seed 0: rates x0.25 to x8 (doubling) of adamw "
      "3e-3, muon 0.02 and muon_rms 3e-3, then adamw 0.048 and 0.096. "
      "Best final validation loss: adamw 0.024 (0.032; 0.012: 0.048, "
      "0.048: 0.043), muon 0.01 (0.052; 5e-3: 0.053, 0.02: 0.085), "
      "muon_rms 3e-3 (0.046; 1.5e-3: 0.138, 6e-3: 0.048). Not swept for "
      "the CNN. Rerun with --config.lr_sweep=0.5,1,2.")
  config.optimizer.name = "muon_8bit"
  return config
