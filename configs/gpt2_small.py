"""GPT-2 small (124M parameters) for users with an accelerator.

12 layers, width 768, 12 heads, context 1024, tied head, GPT-2's padded
vocabulary of 50304 (124M parameters with it). The corpus is bytes, so only
ids 0-255 occur; the shape is GPT-2's so that memory and speed match it.

quantmuon-compare --config configs/gpt2_small.py --workdir /tmp/gpt2
quantmuon-train --config configs/gpt2_small.py:train --workdir /tmp/gpt2_one
"""

from quantmuon_experiments import defaults


def get_config(mode: str = "compare"):
  """GPT-2 small; ``mode`` is ``compare`` or ``train`` (one muon_8bit run)."""
  config = defaults.base_config()
  config.model = defaults.lm_model(
      vocab_size=50304, context=1024, width=768, depth=12, heads=12,
      tied_head=True)
  config.data.chunk_size = 16384
  config.train.steps = 5000
  config.train.batch_size = 32
  config.train.eval_every = 250
  config.train.eval_batches = 20
  config.train.log_every = 50
  config.train.checkpoint_every = 1000 if mode == "train" else 0
  config.optimizer.warmup_steps = 250
  config.optimizer.weight_decay = 0.1
  # Not swept at this size; Moonlight-style rates, rerun with --config.lr_sweep.
  config.learning_rates = defaults.learning_rates(
      adamw=6e-4, muon=0.02, muon_rms=6e-4)
  config.lr_note = ("not swept at this size: AdamW's usual GPT-2 rate, "
                    "shared by the consistent-RMS presets; 0.02 for "
                    "width-scaled muon")
  config.optimizer.name = "muon_8bit"
  config.optimizer.learning_rate = 6e-4
  return config
