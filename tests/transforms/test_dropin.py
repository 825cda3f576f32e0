"""quantmuon as a drop-in for ``optax.contrib.muon``: its keyword arguments
with optax's meaning, and ``muon`` equal to it; every public transform
under ``optax.inject_hyperparams`` with its defaults."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers

import quantmuon as qm

PRESETS = ("muon", "muon_8bit", "muon_4bit", "muonq", "muon_grasp",
           "muon_lowbit")


def _params() -> dict:
  rng = np.random.default_rng(0)
  shapes = {"w1": (48, 80), "w2": (80, 32), "w3": (4, 24, 16),
            "bias": (32,)}
  return {k: jnp.asarray(rng.normal(size=s), jnp.float32)
          for k, s in shapes.items()}


def _optax_defaults() -> dict:
  return {name: p.default for name, p in inspect.signature(
      optax.contrib.muon).parameters.items() if name != "learning_rate"}


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_takes_optax_contrib_muons_full_signature(name):
  params = _params()
  tx = getattr(qm, name)(1e-2, min_size=0, **_optax_defaults())
  updates, state = jax.jit(tx.update)(params, tx.init(params), params)
  assert jax.tree.structure(updates) == jax.tree.structure(params)
  assert all(bool(jnp.all(jnp.isfinite(u)))
             for u in jax.tree.leaves(updates))


GRID = [
    {},
    {"nesterov": False, "weight_decay": 0.1, "adam_weight_decay": 0.05},
    {"preconditioning": "spectral", "consistent_rms": 0.2},
    {"preconditioning": "aol", "adaptive": True},
    {"preconditioning": "schatten", "ns_coeffs": "dion"},
    {"mu_dtype": jnp.bfloat16, "adam_eps_root": 1e-8, "beta": 0.9},
    {"ns_coeffs": ((4.0, -5.0, 2.0), (3.4, -4.7, 2.0)), "ns_steps": 3,
     "eps": 1e-6, "adam_b2": 0.95},
    {"muon_weight_dimension_numbers": {
        "w1": MuonDimensionNumbers(), "w2": None,
        "w3": MuonDimensionNumbers(1, 2), "bias": None},
     "adam_learning_rate": 3e-3},
]


@pytest.mark.parametrize("case", range(len(GRID)))
def test_muon_and_its_twin_equal_optax_contrib_muon(case):
  kw = GRID[case]
  params = _params()
  theirs = optax.contrib.muon(0.02, **kw)
  ours = qm.muon(0.02, **kw)
  # The twin stores everything in float32: equal unless mu_dtype says
  # otherwise.
  twin = qm.full_precision_twin(qm.muon)(0.02, **kw)
  txs = (theirs, ours) if "mu_dtype" in kw else (theirs, ours, twin)
  states = [tx.init(params) for tx in txs]
  steps = [jax.jit(tx.update) for tx in txs]
  for t in range(3):
    grads = jax.tree.map(lambda p, t=t: jnp.cos(p * (t + 1)), params)
    outs = []
    for i, step in enumerate(steps):
      u, states[i] = step(grads, states[i], params)
      outs.append(u)
    for name in params:
      want = np.asarray(outs[0][name], np.float32)
      # Float reassociation (XLA fuses differently across CPUs) moves an
      # element by a few ulps of the update's scale; a bfloat16 momentum
      # rounded at another point of the sum by one bfloat16 ulp.
      scale = float(np.max(np.abs(want)))
      atol = scale * (1e-2 if "mu_dtype" in kw else 1e-5)
      for got in outs[1:]:
        np.testing.assert_allclose(np.asarray(got[name], np.float32), want,
                                   rtol=1e-4, atol=atol,
                                   err_msg=f"{kw} step {t} {name}")
    params = optax.apply_updates(params, outs[0])


def test_values_that_cannot_be_honoured_are_errors():
  with pytest.raises(ValueError, match="muon_8bit: .*preconditioning"):
    qm.muon_8bit(1e-2, preconditioning="newton")
  with pytest.raises(ValueError, match="ns_coeffs"):
    qm.muonq(1e-2, ns_coeffs="quartic")
  with pytest.raises(ValueError, match="ns_steps"):
    qm.muon(1e-2, ns_coeffs="dion", ns_steps=3)
  with pytest.raises(ValueError, match="float dtype"):
    qm.muon_lowbit(1e-2, mu_dtype=jnp.int8).init(_params())
  with pytest.raises(ValueError, match="muon_lowbit: bits must be one of "
                     r"\(4, 2\), got 3"):
    qm.muon_lowbit(1e-2, bits=3)
  with pytest.raises(ValueError, match="muonq: learning_rate must be"):
    qm.muonq("fast")


FP8 = qm.formats.FloatingPoint(exponent_bits=4, mantissa_bits=3)
# Each public transform and the arguments it requires.
TRANSFORMS = {
    "scale_by_quantized_momentum": (
        qm.transforms.scale_by_quantized_momentum, {}),
    "orthogonalize": (qm.transforms.orthogonalize, {}),
    "scale_by_shape": (qm.transforms.scale_by_shape, {}),
    "leafwise_muon": (qm.transforms.leafwise_muon, {}),
    "quantize_gradients": (qm.fp.quantize_gradients, {"fmt": FP8}),
    "snap_params": (qm.fp.snap_params, {"fmt": FP8}),
    "quantize_state": (qm.quantize_state, {
        "inner": optax.adam(1e-2),
        "state_format": qm.formats.Blockwise(8, "dynamic")}),
    "quantized_muon": (qm.quantized_muon, {"learning_rate": 1e-2}),
    "muon_lowbit": (qm.muon_lowbit, {"learning_rate": 1e-2}),
    "muon_lowbit_fp32": (qm.full_precision_twin(qm.muon_lowbit),
                         {"learning_rate": 1e-2}),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_every_public_transform_works_under_inject_hyperparams(name):
  factory, required = TRANSFORMS[name]
  tx = optax.inject_hyperparams(factory)(**required)
  params = {"w": jnp.ones((64, 80)) * 0.5}
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(params, state, params)
  assert jax.tree.structure(updates) == jax.tree.structure(params)
  assert all(bool(jnp.all(jnp.isfinite(u)))
             for u in jax.tree.leaves(updates))
