"""The split of a state's bytes into matrix (Muon) leaves and the rest."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from quantmuon_experiments import optimizers, state_memory
from tests.experiments.conftest import tiny_config

PARAMS = {"wte": {"embedding": jax.ShapeDtypeStruct((256, 64), jnp.float32)},
          "fc": {"kernel": jax.ShapeDtypeStruct((64, 128), jnp.float32),
                 "bias": jax.ShapeDtypeStruct((128,), jnp.float32)}}


def _split(name):
  config = tiny_config().optimizer
  config.name = name
  return state_memory.state_split(optimizers.build(config, 10)[0], PARAMS)


def test_split_params_by_label():
  matrix, other = state_memory.split_params(PARAMS)
  assert matrix == {"fc": {"kernel": PARAMS["fc"]["kernel"]}}
  assert other == {"wte": PARAMS["wte"], "fc": {"bias": PARAMS["fc"]["bias"]}}


def test_matrix_state_and_the_rest():
  adamw, muon, four = _split("adamw"), _split("muon"), _split("muon_4bit")
  n_matrix, n_other = 64 * 128, 256 * 64 + 128
  for s in (adamw, muon, four):
    assert (s["matrix_params"], s["other_params"]) == (n_matrix, n_other)
    assert s["matrix_state_bytes"] + s["other_state_bytes"] == s[
        "state_bytes"]
  assert adamw["matrix_state_bytes"] == 8 * n_matrix
  assert muon["matrix_state_bytes"] == 4 * n_matrix
  assert n_matrix / 2 <= four["matrix_state_bytes"] < n_matrix / 2 + 64
  # The rest is AdamW's moments of the other leaves in every Muon preset.
  assert muon["other_state_bytes"] == four["other_state_bytes"]
  assert 8 * n_other <= muon["other_state_bytes"] < 8 * n_other + 64


def test_memory_at_scale_from_shapes_only():
  from benchmarks import memory_at_scale

  rows = memory_at_scale.rows_of("configs/gpt2_small.py", ["muon", "muonq"],
                                 None, compile_step=False)
  muon, muonq = rows
  assert muon["params"] == 124_475_904  # GPT-2 small, tied head
  assert muon["B_per_matrix_param"] == 4
  assert 0.5 < muonq["B_per_matrix_param"] < 0.6
  assert muon["rest_MiB"] == muonq["rest_MiB"] > 0
  assert muonq["saved_vs_muon_MiB"] == muon["state_MiB"] - muonq["state_MiB"]
  assert "step_GiB" not in muon
