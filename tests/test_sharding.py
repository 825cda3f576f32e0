"""Sharded state on 8 simulated CPU devices.

JAX is initialized with one device in the pytest process, so the checks
run in a fresh process (``tests/sharded_checks.py``) with
``--xla_force_host_platform_device_count=8``; each section runs once per
module and the tests assert on its measurements.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "sharded_checks.py"
# A code may move by one level where a sharded reduction rounds a tie the
# other way; at most this fraction of the codes.
CODE_FRACTION = 1e-3
UPDATE_REL = 1e-5


@functools.cache
def section(name: str) -> dict:
  """Runs one section of the script on 8 simulated devices."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "PYTHONPATH": str(ROOT)}
  done = subprocess.run([sys.executable, str(SCRIPT), name], env=env,
                        capture_output=True, text=True, timeout=900,
                        check=False)
  assert done.returncode == 0, done.stderr[-4000:]
  return json.loads(done.stdout)[name]


def test_explicit_axes_init_and_update_keep_the_rule():
  got = section("explicit")
  assert got, "no explicit checks ran"
  for case, mismatches in got.items():
    assert mismatches == [], case


@pytest.mark.slow
def test_presets_sharded_like_params_and_equal_to_one_device():
  got = section("presets")
  assert len(got) >= 6
  for case, rec in got.items():
    assert rec["pinned_mismatch"] == [], case
    assert rec["plain_init_single_device"] == 0, case
    assert rec["plain_init_big_mismatch"] == [], case
    assert rec["code_fraction"] <= CODE_FRACTION, (case, rec)
    assert rec["code_max_diff"] <= 1, (case, rec)
    # A code one level off changes the next updates by the quantization
    # step (docs/sharding.md); the float path agrees to float32 rounding.
    if rec["code_fraction"] == 0:
      assert rec["update_rel"] <= UPDATE_REL, (case, rec)
    else:
      assert max(rec["update_rel_per_step"][:1]) <= UPDATE_REL, (case, rec)


@pytest.mark.slow
def test_checkpoints_restore_onto_other_meshes():
  got = section("checkpoint")
  assert len(got) == 8
  for case, rec in got.items():
    assert rec["placement_mismatch"] == [], case
    if case.endswith("/fsdp8"):
      assert rec["update_rel"] == 0.0, (case, rec)
    else:
      assert rec["update_rel"] <= UPDATE_REL, (case, rec)


def _sizes(found: list) -> list[int]:
  return [size for _, size in found]


def test_momentum_step_communicates_only_small_shapes():
  # (64, 256) with rank 4: m x n = 16384, n x k = 1024.
  got = section("hlo")
  assert len(got) == 12
  for layout in ("fsdp", "tp"):
    # Blockwise and Grid tiles lie inside shards: no communication at all.
    assert got[f"blockwise/{layout}"] == []
    assert got[f"grid/{layout}"] == []
    # Axiswise: all-reduces of the scales and of their non-finite test
    # only (1, m or n elements).
    for axis in ("tensor", "row", "col"):
      found = got[f"axiswise_{axis}/{layout}"]
      assert {kind for kind, _ in found} <= {"all-reduce"}, found
      assert max(_sizes(found), default=0) <= 256, found
    # Subspace: k x k Grams and (n x k) factors and products, never an
    # array of the momentum's size.
    found = got[f"subspace/{layout}"]
    assert found, "the power iteration contracts a sharded axis"
    assert max(_sizes(found)) <= 256 * 4, found
  # The scale's maximum, and the sum that finds a NaN or an inf in it
  # (formats/layout.tiles_hold_non_finite).
  assert got["axiswise_tensor/fsdp"] == [["all-reduce", 1]] * 2


def test_stacked_newton_schulz_equals_one_device_with_less_traffic():
  got = section("stacked")
  assert set(got) == {"fsdp/Auto", "2d/Auto", "fsdp/Explicit"}
  for case, rec in got.items():
    # float32 rounding of values of size about 1 / sqrt(min(m, n)).
    assert rec["auto"]["max_abs_diff"] <= 2e-6, (case, rec)
  for case in ("fsdp/Auto", "2d/Auto"):
    auto, leaf = got[case]["auto"], got[case]["leaf"]
    # A lone matrix is split along its long axis (136 columns).
    assert auto["specs"]["lone"].startswith("P(None"), (case, auto)
    assert leaf["max_abs_diff"] <= 2e-6, (case, leaf)
    assert auto["collectives"] < leaf["collectives"] / 2, (case, got[case])
    assert auto["collective_bytes"] < leaf["collective_bytes"] / 3, case
  # GSPMD's leaf layout cannot contract sharded axes on Explicit axes.
  assert got["fsdp/Explicit"]["leaf"] == {"error": "ShardingTypeError"}
  assert got["fsdp/Explicit"]["auto"]["specs"]["a"] == "P('fsdp', None)"


@pytest.mark.slow
def test_presets_update_on_explicit_axes_equals_auto():
  got = section("explicit_presets")
  assert len(got) == 6
  for name, rec in got.items():
    assert rec["explicit_mismatch"] == [], name
    assert rec["auto_mismatch"] == [], name
    ex = rec["explicit_vs_auto"]
    assert ex["code_fraction"] <= CODE_FRACTION, (name, ex)
    assert ex["code_max_diff"] <= 1, (name, ex)
    assert ex["update_rel_per_step"][0] <= UPDATE_REL, (name, ex)
    if ex["code_fraction"] == 0:
      assert ex["update_rel"] <= UPDATE_REL, (name, ex)
    one = rec["auto_vs_one_device"]
    assert one["code_max_diff"] <= 1, (name, one)
    assert one["update_rel_per_step"][0] <= UPDATE_REL, (name, one)


def test_quantize_state_plain_jit_init_places_codes_like_params():
  got = section("quantize_state")
  assert set(got) == {"fsdp", "tp", "2d"}
  for layout, rec in got.items():
    assert rec["stored_leaves"] == 8, (layout, rec)  # mu, nu of 4 params
    assert rec["mismatch"] == [], layout
    assert rec["values_equal"], layout


def test_unpinned_update_keeps_the_state_where_init_put_it():
  # jax.jit(tx.update) without out_shardings, the state fed back for three
  # steps: no state leaf moves (a reshard a step), no retrace: muon_8bit
  # and muon_lowbit on the 4x2 mesh, eager and sharding.init. The full
  # set (every preset, fsdp/tp/2d) runs with --full.
  got = section("unpinned")
  assert len(got) == 4
  for case, rec in got.items():
    assert rec == {"moved": [], "traces": 1}, case


def test_update_inside_shard_map_runs_newton_schulz_per_device():
  # Replicated parameters inside shard_map: each device runs the whole
  # update; the stacked layout must not take the manual mesh.
  got = section("shard_map")
  for name, diff in got.items():
    assert isinstance(diff, float), (name, diff)
    assert diff <= 1e-6, (name, diff)

