"""Small configs for the experiment tests: a tiny GPT on 1 MiB of stdlib."""

from __future__ import annotations

import ml_collections
import pytest

from quantmuon_experiments import defaults


def tiny_config(steps: int = 4) -> ml_collections.ConfigDict:
  """A GPT with 64-wide matrices (quantized: 64 x 64 = min_size), 1 block."""
  config = defaults.base_config()
  config.model = defaults.lm_model(context=32, width=64, depth=1, heads=2,
                                   mlp_ratio=2)
  config.data.max_bytes = 1 << 20
  config.data.chunk_size = 1024
  config.train.steps = steps
  config.train.batch_size = 4
  config.train.eval_every = 2
  config.train.eval_batches = 1
  config.train.log_every = 1
  config.train.progress = False
  config.optimizer.warmup_steps = 1
  config.timing.update(warmup=1, repeats=3, steps=1)
  return config


@pytest.fixture
def tiny() -> ml_collections.ConfigDict:
  """``tiny_config()`` as a fixture."""
  return tiny_config()
