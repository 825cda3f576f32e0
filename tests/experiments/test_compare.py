"""The comparison: a short run writes every output; the sweep."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from quantmuon_experiments import compare, defaults, errors, optimizers, train
from tests.experiments.conftest import tiny_config

FIELDS = ("final_val_loss", "best_val_loss", "state_bytes",
          "state_bytes_per_param", "state_bytes_per_matrix_param",
          "other_state_bytes", "step_time_s",
          "compiled_step_memory_bytes", "train_curve", "val_curve",
          "gap_pct", "memory_reduction", "time_ratio")


def test_compare_writes_every_output(tmp_path):
  config = tiny_config(steps=5)
  config.optimizers = "muon,muon_rms,muon_4bit"
  config.seeds = "0,1"
  results = compare.compare(config, str(tmp_path))
  for name in ("results.json", "results.md", "loss_curves.png",
               "memory.png"):
    assert os.path.getsize(tmp_path / name) > 0, name
  saved = json.loads(open(tmp_path / "results.json").read())
  assert saved["reference"] == "muon" and saved["seeds"] == [0, 1]
  for name in ("muon", "muon_rms", "muon_4bit"):
    r = saved["optimizers"][name]
    for field in FIELDS + ("twin_gap_pct",):
      assert field in r, (name, field)
    assert len(r["runs"]) == 2 and len(r["final_val_loss_per_seed"]) == 2
    assert len(r["train_curve"]) == 5
  muon, four = saved["optimizers"]["muon"], saved["optimizers"]["muon_4bit"]
  assert muon["gap_pct"] == 0 and muon["memory_reduction"] == 1
  assert four["state_bytes"] < muon["state_bytes"]
  assert muon["learning_rate"] == config.learning_rates.muon
  assert saved["optimizers"]["muon_rms"]["twin_gap_pct"] == 0
  for r in saved["optimizers"].values():  # timed apart, in rounds
    assert len(r["step_time_rounds_s"]) == config.timing.repeats
    spread = r["step_time"]
    assert spread["min"] <= spread["median"] <= spread["max"]
    assert r["step_time_s"] == spread["median"]
  assert muon["time_ratio"] == 1 and muon["time_ratio_spread"]["max"] == 1
  table = open(tmp_path / "results.md").read()
  assert "| `muon_4bit` |" in table and "gap to muon (%)" in table
  assert "gap to muon_rms (%)" in table and " ± " in table
  assert "step ms (min-max)" in table
  assert "B/matrix param" in table and "AdamW's two moments" in table
  assert muon["state_bytes_per_matrix_param"] == 4
  assert four["other_state_bytes"] == muon["other_state_bytes"]
  assert "benchmarks.optimizer_step" in table
  assert results["optimizers"].keys() == saved["optimizers"].keys()
  # The quantized preset ran beside its exact full-precision twin.
  assert list(saved["optimizers"]) == ["muon", "muon_rms", "muon_4bit",
                                       "muon_4bit_fp32"]
  assert four["twin"] == "muon_4bit_fp32" and muon["twin"] is None
  twin = saved["optimizers"]["muon_4bit_fp32"]
  assert four["quantization_cost_pct"] == pytest.approx(
      100 * (four["final_val_loss"] - twin["final_val_loss"])
      / twin["final_val_loss"], abs=0.5)
  assert twin["state_bytes"] == muon["state_bytes"]
  assert "quantization cost vs twin (%)" in table
  assert "(`muon_4bit_fp32`)" in table


def test_twins_of_the_same_optimizer_run_once():
  names, twins = compare.with_twins(
      ["muon", "muon_8bit", "muon_8bit_dynamic", "muon_4bit", "muon_grasp",
       "muonq"])
  assert names == ["muon", "muon_8bit", "muon_8bit_dynamic", "muon_4bit",
                   "muon_grasp", "muonq", "muon_8bit_fp32", "muon_4bit_fp32",
                   "muonq_fp32"]
  assert twins == {"muon_8bit": "muon_8bit_fp32",
                   "muon_8bit_dynamic": "muon_8bit_fp32",
                   "muon_4bit": "muon_4bit_fp32",
                   "muon_grasp": "muon_4bit_fp32", "muonq": "muonq_fp32"}
  # A twin asked for by name stands for its preset's twin.
  assert compare.with_twins(["muon_grasp", "muon_grasp_fp32"]) == (
      ["muon_grasp", "muon_grasp_fp32"], {"muon_grasp": "muon_grasp_fp32"})


def test_sweep_picks_the_best_rate(tmp_path):
  config = tiny_config(steps=3)
  config.optimizers = "adamw"
  config.lr_sweep = "0.01,1"
  results = compare.compare(config, str(tmp_path))
  sweep = results["lr_sweep"]
  assert list(sweep) == ["adamw"]
  tried = sweep["adamw"]["tried"]
  assert [t["multiplier"] for t in tried] == [0.01, 1.0]
  best = min(tried, key=lambda t: t["final_val_loss"])["learning_rate"]
  assert sweep["adamw"]["best"] == best
  assert results["learning_rates"]["adamw"] == best
  assert "Learning-rate sweep" in open(tmp_path / "results.md").read()


def test_every_optimizer_builds_and_steps():
  import jax
  import jax.numpy as jnp

  params = {"wte": {"embedding": jnp.ones((16, 64))},
            "fc": {"kernel": jnp.ones((64, 64)) * 0.1, "bias": jnp.zeros(64)}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)
  config = tiny_config().optimizer
  for name in optimizers.NAMES:
    config.name = name
    tx, schedule = optimizers.build(config, 10)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert all(math.isfinite(float(jnp.abs(u).sum()))
               for u in jax.tree.leaves(updates)), name
  assert float(schedule(0)) == 0.0
  assert optimizers.rate_group("muonq") == "muon_rms"


def _count_training(monkeypatch) -> list[tuple[str, int]]:
  """Records the (optimizer, seed) of every run that ``compare`` trains."""
  trained: list[tuple[str, int]] = []
  real_fit = train.fit

  def counting_fit(config, workdir, **kwargs):
    trained.append((config.optimizer.name, config.seed))
    return real_fit(config, workdir, **kwargs)

  monkeypatch.setattr(train, "fit", counting_fit)
  return trained


def test_runs_are_read_back_by_default_unless_the_run_changes(
    tmp_path, monkeypatch):
  trained = _count_training(monkeypatch)
  config = tiny_config(steps=2)
  config.optimizers = "muon"
  config.seeds = "1"
  config.timing.update(warmup=0, repeats=1)
  compare.compare(config, str(tmp_path))
  assert trained == [("muon", 1)]
  config.seeds = "0,1"  # seed 1 was trained by the first command
  first = compare.compare(config, str(tmp_path))["optimizers"]["muon"]
  assert trained == [("muon", 1), ("muon", 0)]
  assert first["seeds"] == [0, 1]
  # What only changes the display is the same run.
  config.train.progress = True
  config.train.log_every = 7
  compare.compare(config, str(tmp_path))
  assert len(trained) == 2
  config.train.steps = 3  # another run config: trained again
  compare.compare(config, str(tmp_path))
  assert trained[2:] == [("muon", 0), ("muon", 1)]
  config.reuse_runs = False
  compare.compare(config, str(tmp_path))
  assert len(trained) == 6
  # Runs recorded before config.mesh existed are the one-device runs.
  single = compare.run_config(config, "muon", 0)
  fingerprint = compare.run_fingerprint(single)
  assert "mesh" not in fingerprint
  single.mesh.fsdp = 2
  assert compare.run_fingerprint(single)["mesh"] == {"data": 1, "fsdp": 2}


def test_a_run_recorded_with_its_display_fields_is_the_same_run(tmp_path):
  """Runs recorded before the display fields left the fingerprint."""
  run = compare.run_config(tiny_config(), "muon", 0)
  recorded = json.loads(run.to_json())
  recorded["train"]["progress"] = not run.train.progress
  (tmp_path / compare.RUN_CONFIG).write_text(json.dumps(recorded))
  (tmp_path / "summary.json").write_text(json.dumps({"final_val_loss": 1}))
  assert compare.read_back(run, str(tmp_path)) == {"final_val_loss": 1}
  recorded["train"]["eval_every"] += 1
  (tmp_path / compare.RUN_CONFIG).write_text(json.dumps(recorded))
  assert compare.read_back(run, str(tmp_path)) is None


def _bad(field: str, value) -> object:
  config = tiny_config()
  section, _, key = field.rpartition(".")
  (config[section] if section else config)[key] = value
  return config


@pytest.mark.parametrize("field, value, message", [
    ("train.steps", 0, "config.train.steps must be at least 1, got 0"),
    ("train.steps", -5, "config.train.steps must be at least 1, got -5"),
    ("train.eval_every", 0, "config.train.eval_every must be at least 1"),
    ("train.batch_size", 0, "config.train.batch_size must be at least 1"),
    ("optimizer.warmup_steps", -1, "config.optimizer.warmup_steps"),
    ("learning_rates.muon", 0.0,
     "config.learning_rates.muon must be above 0, got 0.0"),
    ("seeds", "0,x", "config.seeds: '0,x' is not a list of integers"),
    ("lr_sweep", "0,1", "config.lr_sweep: '0,1' is not a list of positive"),
    ("optimizers", "muon,sgd", "config.optimizers: unknown names ['sgd']"),
    ("optimizer.options", {"no_such_option": 1}, "config.optimizer (muon): "),
    ("timing.repeats", 0, "config.timing.repeats must be at least 1"),
    ("model.heads", 3, "config.model: "),
    ("mesh.data", 2, "config.mesh: data * fsdp = 2 * 1 = 2 must equal"),
])
def test_bad_configs_fail_before_any_training(tmp_path, monkeypatch, field,
                                               value, message):
  trained = _count_training(monkeypatch)
  config = _bad(field, value)
  config.optimizers = config.optimizers if field == "optimizers" else (
      "muon,muon_4bit")
  with pytest.raises(errors.ConfigError) as raised:
    compare.compare(config, str(tmp_path))
  assert message in str(raised.value), str(raised.value)
  assert trained == []
  assert not (tmp_path / "runs").exists()


def test_the_reference_is_full_precision_muon_else_the_twin():
  assert compare.reference_of(["adamw", "muon_8bit", "muon", "muon_rms"],
                              {}) == "muon"
  names, twins = compare.with_twins(["muon_lowbit"])
  assert compare.reference_of(names, twins) == "muon_lowbit_fp32"
  names, twins = compare.with_twins(["adamw", "muon_rms", "muon_8bit"])
  assert compare.reference_of(names, twins) == "muon_rms"
  assert compare.reference_of(["muon_8bit", "adamw"], {}) == "muon_8bit"


def test_one_preset_reads_against_its_twin(tmp_path):
  config = tiny_config(steps=2)
  config.optimizers = "muon_4bit"
  config.timing.update(warmup=0, repeats=1)
  results = compare.compare(config, str(tmp_path))
  assert results["reference"] == "muon_4bit_fp32"
  four = results["optimizers"]["muon_4bit"]
  assert four["memory_reduction"] > 1
  table = open(tmp_path / "results.md").read()
  assert ("reference: `muon_4bit_fp32` (the full-precision twin of "
          "`muon_4bit`; full-precision Muon did not run)") in table
  assert "the smallest state (`muon_4bit`," in table
  assert "1.00x smaller" not in table
  assert "not tuned by this run" in table
  assert "Noise: this run has one seed" in table
  # With the twin alone, nothing is smaller than the reference.
  config.optimizers = "muon_4bit_fp32"
  compare.compare(config, str(tmp_path / "alone"))
  table = open(tmp_path / "alone" / "results.md").read()
  assert "no optimizer here has a smaller state" in table


def test_the_default_config_is_the_quick_headline():
  config = defaults.get_config()
  names, twins = compare.with_twins(compare.parse_list(config.optimizers))
  assert sorted(names) == ["adamw", "muon", "muon_8bit", "muon_8bit_fp32",
                           "muon_lowbit", "muon_lowbit_fp32"]
  assert twins == {"muon_8bit": "muon_8bit_fp32",
                   "muon_lowbit": "muon_lowbit_fp32"}
  assert config.reuse_runs and config.noise_pct > 0
  assert config.eta.setup_s > 0 and config.eta.step_s > 0


@pytest.mark.parametrize("option, expected", [
    ("--config.train.steps=0", "config.train.steps must be at least 1, got 0"),
    ("--config.optimizers=muon,sgd", "config.optimizers: unknown names"),
    ("--config.train.stepz=3", "--config.train.stepz: no such field in the "
     'default config; did you mean "steps"?'),
    ("--config.train.steps=many", "--config.train.steps"),
])
def test_command_line_errors_are_one_line_before_training(tmp_path, option,
                                                         expected):
  """The default config (no --config), overridden wrongly."""
  cmd = [sys.executable, "-m", "quantmuon_experiments.compare",
         "--workdir", str(tmp_path), option]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1, out.stderr[-3000:]
  assert ": error: " in lines[0] and expected in lines[0], lines[0]
  assert not (tmp_path / "runs").exists()
