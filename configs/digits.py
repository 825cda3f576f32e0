"""A second task: scikit-learn's 8x8 digits with an MLP or a CNN.

quantmuon-compare --config configs/digits.py --workdir /tmp/digits
quantmuon-compare --config configs/digits.py:cnn --workdir /tmp/digits_cnn

The hidden matrices (64 x 256, 256 x 256; for the CNN, conv kernels kept as
(9 * in, out) matrices and a 1024 x 256 dense layer) go to Muon, the output
head and biases to AdamW.
"""

from quantmuon.experiments import defaults


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
      adamw=3e-3, muon=0.02, muon_rms=3e-3)
  config.lr_note = "not swept"
  config.optimizer.name = "muon_8bit"
  return config
