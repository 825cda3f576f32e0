"""Training runs: bit-exact resume, digits, the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from quantmuon.experiments import (
    checkpoint,
    defaults,
    optimizers,
    tasks,
    train,
)
from tests.experiments.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _train_losses(workdir) -> list[float]:
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  return [r["loss"] for r in records if r["split"] == "train"]


def test_resume_is_bit_exact(tmp_path):
  """3 steps, a restart from the checkpoint, 3 more == 6 uninterrupted."""
  config = tiny_config(steps=6)
  config.optimizer.name = "muon_grasp"  # nested Stored values in the state
  config.train.checkpoint_every = 3
  full = train.train(config, tmp_path / "full")

  train.train(config, tmp_path / "split", stop_after=3)
  assert len(_train_losses(tmp_path / "split")) == 3
  resumed = train.train(config, tmp_path / "split", resume=True)

  assert _train_losses(tmp_path / "split") == _train_losses(tmp_path / "full")
  assert len(_train_losses(tmp_path / "split")) == 6
  assert resumed["val_curve"] == full["val_curve"]

  # The saved step-6 checkpoints hold identical params and state.
  task = tasks.make_task(config, config.seed)
  params = nnx.to_pure_dict(nnx.state(task.model))
  tx, _ = optimizers.build(config.optimizer, 6)
  fresh = tx.init(params)
  a = checkpoint.Checkpointer(tmp_path / "full" / "checkpoints", 3)
  b = checkpoint.Checkpointer(tmp_path / "split" / "checkpoints", 3)
  assert a.latest_step() == b.latest_step() == 6
  tree_a, tree_b = a.restore(6, params, fresh), b.restore(6, params, fresh)
  for x, y in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert jax.tree.structure(tree_a[1]) == jax.tree.structure(fresh)


def test_summary_fields(tmp_path):
  config = tiny_config(steps=3)
  config.optimizer.name = "muon_8bit"
  s = train.train(config, tmp_path)
  assert s["state_bytes"] > 0
  assert s["state_bytes_per_param"] == s["state_bytes"] / s["params"]
  assert s["compiled_step_memory_bytes"] == sum(
      s["compiled_step_memory"][k]
      for k in ("arguments", "outputs", "temporaries"))
  assert s["compiled_step_memory_bytes"] > 0
  assert [step for step, _ in s["val_curve"]] == [2, 3]
  assert s["best_val_loss"] <= s["final_val_loss"]
  assert np.isfinite(s["step_time_s"])
  assert os.path.exists(tmp_path / "summary.json")
  assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_digits_runs(tmp_path, kind):
  config = tiny_config(steps=3)
  config.task = "digits"
  config.model = defaults.digits_model(kind=kind, width=16, depth=1)
  config.optimizer.name = "muonq"
  s = train.train(config, tmp_path)
  assert s["task"]["task"] == "digits"
  assert 0 <= s["final_val_metrics"]["accuracy"] <= 1


def test_train_command_line(tmp_path):
  """``python -m quantmuon.experiments.train`` with config overrides."""
  cmd = [sys.executable, "-m", "quantmuon.experiments.train",
         "--config", os.path.join(ROOT, "configs", "train.py"),
         "--workdir", str(tmp_path),
         "--config.train.steps=2", "--config.train.eval_every=2",
         "--config.train.batch_size=2", "--config.train.eval_batches=1",
         "--config.train.checkpoint_every=2", "--config.model.width=32",
         "--config.model.depth=1", "--config.model.context=16",
         "--config.data.max_bytes=200000", "--config.optimizer.name=adamw"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads(open(tmp_path / "summary.json").read())
  assert summary["optimizer"] == "adamw"
  assert os.path.isdir(tmp_path / "checkpoints" / "2")
