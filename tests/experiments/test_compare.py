"""The comparison: a short run writes every output; the sweep."""

from __future__ import annotations

import json
import math
import os

import pytest

from quantmuon_experiments import compare, errors, optimizers
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
  assert "B/matrix param" in table and "AdamW's two float32 moments" in table
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


def test_unknown_optimizer_is_an_error(tmp_path):
  config = tiny_config()
  config.optimizers = "muon,sgd"
  with pytest.raises(errors.ConfigError, match="config.optimizers"):
    compare.compare(config, str(tmp_path))


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


def test_reuse_runs_reads_back_only_runs_of_the_same_config(tmp_path,
                                                           monkeypatch):
  trained = []
  real_train = compare.train

  def counting_train(config, workdir, **kwargs):
    trained.append((config.optimizer.name, config.seed))
    return real_train(config, workdir, **kwargs)

  monkeypatch.setattr(compare, "train", counting_train)
  config = tiny_config(steps=2)
  config.optimizers = "muon"
  config.seeds = "1"
  config.timing.update(warmup=0, repeats=1)
  compare.compare(config, str(tmp_path))
  assert trained == [("muon", 1)]
  config.seeds = "0,1"  # seed 1 was trained by the first command
  config.reuse_runs = True
  first = compare.compare(config, str(tmp_path))["optimizers"]["muon"]
  assert trained == [("muon", 1), ("muon", 0)]
  assert first["seeds"] == [0, 1]
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
