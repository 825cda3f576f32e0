"""Quantized optimizer state round-trips through Orbax exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import quantmuon as qm

PRESETS = [qm.muon_8bit, qm.muonq, qm.muon_grasp]


@pytest.mark.parametrize("make", PRESETS, ids=lambda f: f.__name__)
def test_state_round_trips_through_orbax(make, tmp_path):
  params = {"w": jax.random.normal(jax.random.key(0), (64, 96)),
            "b": jnp.zeros((96,))}
  tx = make(1e-3, min_size=0)
  state = tx.init(params)
  _, state = jax.jit(tx.update)(params, state, params)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "state", state)
    ckptr.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = ckptr.restore(tmp_path / "state", abstract)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored),
                  strict=True):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
