"""Training runs: bit-exact resume, digits, the command line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from quantmuon_experiments import (
    checkpoint,
    defaults,
    optimizers,
    progress,
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
  fresh = train.guard(tx, config.train).init(params)
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
  assert s["matrix_params"] + s["other_params"] == s["params"]
  assert s["matrix_state_bytes"] + s["other_state_bytes"] == s["state_bytes"]
  assert 1 < s["state_bytes_per_matrix_param"] < 1.01  # int8, absmax / 2048
  # The rest: AdamW's two float32 moments of the other leaves, and counters.
  assert 8 * s["other_params"] < s["other_state_bytes"] < (
      8 * s["other_params"] + 64)
  assert s["compiled_step_memory_bytes"] == sum(
      s["compiled_step_memory"][k]
      for k in ("arguments", "outputs", "temporaries"))
  assert s["compiled_step_memory_bytes"] > 0
  assert [step for step, _ in s["val_curve"]] == [2, 3]
  assert s["best_val_loss"] <= s["final_val_loss"]
  assert np.isfinite(s["step_time_s"])
  assert os.path.exists(tmp_path / "summary.json")
  assert not os.path.exists(tmp_path / "checkpoints")


def test_scanned_layers_train_with_the_same_state(tmp_path):
  """``model.scan_layers``: the optimizer is told the stack axis, so the
  state and the matrix split are those of the list of blocks."""
  config = tiny_config(steps=2)
  config.model.depth = 2
  config.optimizer.name = "muon_8bit"
  plain = train.train(config, tmp_path / "plain")
  config.model.scan_layers = True
  scanned = train.train(config, tmp_path / "scanned")
  for key in ("params", "state_bytes", "matrix_params",
              "matrix_state_bytes"):
    assert scanned[key] == plain[key], key
  assert np.isfinite(scanned["final_val_loss"])


def _digits_config(steps: int = 4):
  config = tiny_config(steps=steps)
  config.task = "digits"
  config.model = defaults.digits_model(kind="mlp", width=64, depth=1)
  config.optimizer.name = "muon_8bit"  # the 64 x 64 matrix is quantized
  return config


def _nan_batch(batch):
  return dict(batch, images=np.full_like(batch["images"], np.nan))


def test_nonfinite_batch_touches_nothing():
  """A NaN batch leaves params and optimizer state bit-identical."""
  run = train.setup(_digits_config())
  assert isinstance(run.opt_state, optax.ApplyIfFiniteState)
  params, state, _ = run.step(run.params, run.opt_state,
                              run.task.train_batch(0))
  before = [np.array(x) for x in jax.tree.leaves((params, state.inner_state))]
  params, state, out = run.step(params, state,
                                _nan_batch(run.task.train_batch(1)))
  assert not np.isfinite(float(out["loss"]))
  after = [np.array(x) for x in jax.tree.leaves((params, state.inner_state))]
  assert len(before) == len(after)
  for x, y in zip(before, after, strict=True):
    np.testing.assert_array_equal(x, y)
  assert train.consecutive_skips(state) == 1
  assert int(state.total_notfinite) == 1
  params, state, _ = run.step(params, state, run.task.train_batch(2))
  assert train.consecutive_skips(state) == 0
  assert any(not np.array_equal(x, np.array(y)) for x, y in zip(
      before[:len(jax.tree.leaves(params))], jax.tree.leaves(params),
      strict=True))


def _poison(monkeypatch, bad_steps):
  make_task = tasks.make_task

  def poisoned(config, seed):
    task = make_task(config, seed)
    good = task.train_batch
    task.train_batch = (lambda step: _nan_batch(good(step))
                        if step in bad_steps else good(step))
    return task

  monkeypatch.setattr(tasks, "make_task", poisoned)


def test_training_skips_and_counts_nonfinite_steps(tmp_path, monkeypatch):
  _poison(monkeypatch, {2})
  s = train.train(_digits_config(steps=4), tmp_path)
  assert s["skipped_steps"] == 1 and not s["diverged"]
  assert [step for step, _ in s["train_curve"]] == [1, 2, 4]
  assert np.isfinite(s["final_val_loss"])
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["skipped"] for r in records if r["split"] == "train"] == [
      False, False, True, False]


def test_too_many_skips_in_a_row_diverge(tmp_path, monkeypatch):
  _poison(monkeypatch, {1, 2, 3})
  config = _digits_config(steps=5)
  config.train.max_consecutive_skips = 2
  s = train.train(config, tmp_path)
  assert s["diverged"] and s["skipped_steps"] == 2
  assert len(_train_losses(tmp_path)) == 3  # stopped at step 3


def test_skipping_can_be_turned_off(tmp_path, monkeypatch):
  _poison(monkeypatch, {1})
  config = _digits_config(steps=4)
  config.train.skip_nonfinite = False
  s = train.train(config, tmp_path)
  assert s["diverged"] and s["skipped_steps"] == 0
  assert len(_train_losses(tmp_path)) == 2


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
  """``python -m quantmuon_experiments.train`` with config overrides."""
  cmd = [sys.executable, "-m", "quantmuon_experiments.train",
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


def test_progress_in_a_log_is_one_line_per_interval(tmp_path, capsys):
  """Not a terminal: plain lines at the log interval, no tqdm frames."""
  config = _digits_config(steps=4)
  config.train.progress = True
  config.train.log_every = 2
  train.train(config, tmp_path)
  err = capsys.readouterr().err
  assert "\r" not in err
  lines = [line for line in err.splitlines() if line.startswith("muon_8bit")]
  assert [line.split("  ")[1] for line in lines] == ["2/4", "4/4"]
  assert "loss" in lines[-1] and "val" in lines[-1]


def test_progress_is_a_bar_on_a_terminal():
  class Terminal(io.StringIO):
    def isatty(self):
      return True

  bar = progress.make(True, 4, 0, "x", Terminal())
  assert isinstance(bar, progress.Bar)
  bar.close()
  assert type(progress.make(False, 4, 0, "x", Terminal())) is (
      progress.Progress)


@pytest.mark.parametrize("option, expected", [
    ("--config.train.stepz=3",
     '--config.train.stepz: no such field in the config of '),
    ("--config.optimizer.name=sgd",
     "config.optimizer.name: unknown optimizer 'sgd'; use one of adamw"),
    ("--config.data.path=/no/such/corpus",
     "config.data: corpus path '/no/such/corpus' does not exist; set "),
    ("--config.mesh.data=2",
     "config.mesh: data * fsdp = 2 * 1 = 2 must equal the number of "
     "devices, 1; set "),
    ("--config.train.steps=-5",
     "config.train.steps must be at least 1, got -5; set "),
])
def test_config_errors_are_one_line(tmp_path, option, expected):
  cmd = [sys.executable, "-m", "quantmuon_experiments.train",
         "--config", os.path.join(ROOT, "configs", "train.py"),
         "--workdir", str(tmp_path), "--config.data.max_bytes=100000",
         option]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1, out.stderr[-3000:]
  assert ": error: " in lines[0] and expected in lines[0], lines[0]


def test_a_ready_optimizer_trains_through_the_same_loop(tmp_path):
  """``tx=`` gives the named optimizer's losses, under its own name."""
  config = tiny_config(steps=3)
  config.optimizer.name = "muonq"
  named = train.train(config, tmp_path / "named")
  tx, _ = optimizers.build(config.optimizer, config.train.steps)
  ready = train.fit(config, tmp_path / "ready", tx=tx, name="my muonq")
  assert ready.summary["train_curve"] == named["train_curve"]
  assert ready.summary["val_curve"] == named["val_curve"]
  assert ready.summary["state_bytes"] == named["state_bytes"]
  assert ready.summary["optimizer"] == "my muonq"
  assert ready.summary["learning_rate"] is None
  assert named["learning_rate"] == config.optimizer.learning_rate
  records = [json.loads(line)
             for line in open(tmp_path / "ready" / "metrics.jsonl")]
  assert all("lr" not in r for r in records)
  n_params = sum(int(p.size) for p in jax.tree.leaves(ready.params))
  assert n_params == named["params"]
  assert isinstance(ready.opt_state, optax.ApplyIfFiniteState)


def test_importing_the_loop_defines_no_flags():
  """A program with its own absl flags can import train and compare."""
  code = ("from absl import flags\n"
          "import quantmuon_experiments.compare\n"
          "print(sorted({'config', 'workdir', 'resume'} & set(flags.FLAGS)))")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == "[]"


def test_every_config_file_loads_by_path_outside_the_repository(tmp_path):
  """The commands load ``--config`` by path; a config cannot import
  ``configs.*`` then, because the repository root is not on sys.path."""
  paths = sorted(os.path.join(ROOT, "configs", f)
                 for f in os.listdir(os.path.join(ROOT, "configs"))
                 if f.endswith(".py") and not f.startswith("_"))
  script = (
      "import importlib.util, sys\n"
      "for path in sys.argv[1:]:\n"
      "  spec = importlib.util.spec_from_file_location('cfg', path)\n"
      "  module = importlib.util.module_from_spec(spec)\n"
      "  spec.loader.exec_module(module)\n"
      "  assert module.get_config().train.steps > 0, path\n")
  # Only this checkout's two packages on the path, not its root.
  packages = tmp_path / "packages"
  packages.mkdir()
  for name in ("quantmuon", "quantmuon_experiments"):
    (packages / name).symlink_to(os.path.join(ROOT, name))
  env = dict(os.environ, PYTHONPATH=str(packages))
  done = subprocess.run([sys.executable, "-c", script, *paths],
                        cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr
