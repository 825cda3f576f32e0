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


# A format change that keeps every shape: the codes would be misread.
MISMATCHED = {
    "codebook": (lambda: qm.muon_8bit(1e-3),
                 lambda: qm.muon_8bit(1e-3, scheme="dynamic")),
    "companding": (lambda: qm.muonq(1e-3),
                   lambda: qm.muonq(1e-3, companding="after_scale")),
    "adam_state": (  # StoredLeaf of quantize_state
        lambda: qm.muon_8bit(1e-3, min_size=0,
                             adam_state_format=qm.formats.Blockwise(
                                 8, "dynamic", block_size=32)),
        lambda: qm.muon_8bit(1e-3, min_size=0,
                             adam_state_format=qm.formats.Blockwise(
                                 8, "linear", block_size=32))),
}


def _saved_state(make, path):
  params = {"w": jax.random.normal(jax.random.key(0), (64, 96)),
            "b": jnp.zeros((96,))}
  tx = make()
  state = tx.init(params)
  _, state = jax.jit(tx.update)(params, state, params)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, state)
    ckptr.wait_until_finished()
  return params, state


def _tags(tree):
  return set(qm.formats.stored.formats_by_tag(tree))


@pytest.mark.parametrize("change", sorted(MISMATCHED))
def test_restore_into_another_format_fails(change, tmp_path):
  """Was a silent restore: the state decoded through the target's format
  (the momentum 0.79 relative off for linear codes read as dynamic)."""
  saved, wanted = MISMATCHED[change]
  params, state = _saved_state(saved, tmp_path / "state")
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                        wanted().init(params))
  # The premise: the same arrays, in another format.
  assert jax.tree.structure(target) != jax.tree.structure(state)
  assert ([(x.shape, x.dtype) for x in jax.tree.leaves(target)]
          == [(x.shape, x.dtype) for x in jax.tree.leaves(state)])
  with ocp.StandardCheckpointer() as ckptr, pytest.raises(ValueError) as err:
    ckptr.restore(tmp_path / "state", target)
  with pytest.raises(ValueError) as err_pytree:
    ocp.PyTreeCheckpointer().restore(
        tmp_path / "state", item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target))
  new_tags = _tags(target) - _tags(state)
  for e in (err, err_pytree):
    assert any(tag in str(e.value) for tag in new_tags), e.value


def test_state_of_quantized_adam_round_trips(tmp_path):
  make = MISMATCHED["adam_state"][0]
  params, state = _saved_state(make, tmp_path / "state")
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = ocp.PyTreeCheckpointer().restore(
      tmp_path / "state", item=target,
      restore_args=ocp.checkpoint_utils.construct_restore_args(target))
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
