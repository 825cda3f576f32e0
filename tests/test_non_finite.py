"""A NaN in a gradient, through every preset: wherever the float32 twin's
momentum is non-finite, the stored momentum decodes to non-finite values,
step after step (muon_8bit's stored it as finite codes and its next update
was finite again: the loss of information was silent)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import quantmuon as qm

PRESETS = {
    "muon_8bit": (qm.muon_8bit, {}),
    "muon_8bit_dynamic": (qm.muon_8bit, {"scheme": "dynamic"}),
    "muon_4bit": (qm.muon_4bit, {}),
    "muonq": (qm.muonq, {}),
    "muon_grasp": (qm.muon_grasp, {"tile": 32}),
    "muon_lowbit": (qm.muon_lowbit, {}),
    "muon_lowbit_2bit": (qm.muon_lowbit, {"bits": 2}),
}


def _momentum(state):
  found = [s for s in jax.tree.leaves(state, is_leaf=qm.formats.is_stored)
           if qm.formats.is_stored(s)]
  (stored,) = found
  return np.asarray(stored.decode())


@functools.cache
def _optimizer(name: str, twin: bool):
  """The preset (or its twin) and its jitted update, shared by the tests."""
  make, kw = PRESETS[name]
  make = qm.full_precision_twin(make) if twin else make
  tx = make(1e-2, min_size=0, impl="xla", **kw)
  return tx, jax.jit(tx.update)


def _run(name, twin, bad):
  tx, step = _optimizer(name, twin)
  params = {"w": jnp.zeros((64, 128))}
  g = jax.random.normal(jax.random.key(0), (64, 128))
  state = tx.init(params)
  seen = []
  for grad in (g, g.at[3, 5].set(bad), g, g):
    updates, state = step({"w": grad}, state, params)
    seen.append((_momentum(state), np.asarray(updates["w"])))
  return seen


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_non_finite_momentum_stays_non_finite(name, bad):
  quantized, twin = _run(name, False, bad), _run(name, True, bad)
  for (m, u), (m_twin, u_twin) in zip(quantized[1:], twin[1:], strict=True):
    assert np.any(~np.isfinite(m_twin))  # the premise
    assert np.all(~np.isfinite(m[~np.isfinite(m_twin)]))
    assert np.all(~np.isfinite(u[~np.isfinite(u_twin)]))
