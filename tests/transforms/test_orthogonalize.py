"""Newton-Schulz orthogonalization and shape scaling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import MuonDimensionNumbers
from optax.contrib._muon import orthogonalize_via_newton_schulz

import quantmuon as qm
from quantmuon.transforms import newton_schulz as ortho
from tests.transforms import numpy_muon as ref


def _matrix(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(24, 40), (40, 24)])
def test_quintic_matches_numpy(shape):
  x = _matrix(shape)
  tx = qm.transforms.orthogonalize()
  out, _ = tx.update({"w": jnp.asarray(x)}, tx.init(None))
  np.testing.assert_allclose(out["w"], ref.newton_schulz(x), atol=2e-5)


def test_polar_express_orthogonalizes_better_than_quintic():
  x = _matrix((32, 48))
  svals = {}
  for name in ("quintic", "polar_express"):
    schedule = ortho.newton_schulz_schedule(name, 5)
    out = np.asarray(ortho.newton_schulz(jnp.asarray(x), schedule))
    svals[name] = np.linalg.svd(out, compute_uv=False)
  # Polar Express lands close to 1; the quintic leaves S' in ~[0.5, 1.5].
  assert np.max(np.abs(svals["polar_express"] - 1)) < 0.15
  assert np.max(np.abs(svals["quintic"] - 1)) > \
      np.max(np.abs(svals["polar_express"] - 1))


@pytest.mark.parametrize("steps,low,high", [
    (5, 0.85, 1.15), (8, 1 - 1e-5, 1 + 1e-5), (12, 1 - 1e-5, 1 + 1e-5)])
def test_polar_express_converges_beyond_five_steps(steps, low, high):
  """Repeating the fifth triple left S' in [0.998, 1.082] at 8 steps and
  [1.026, 1.048] at 12 (its fixed point is about 1.035)."""
  x = _matrix((32, 48))
  schedule = ortho.newton_schulz_schedule("polar_express", steps)
  out = np.asarray(ortho.newton_schulz(jnp.asarray(x), schedule))
  svals = np.linalg.svd(out, compute_uv=False)
  assert low < svals.min() and svals.max() < high, (svals.min(), svals.max())


def test_custom_triples_and_their_errors():
  assert ortho.newton_schulz_schedule((1.5, -0.5, 0.0), 3).coeffs == \
      ((1.5, -0.5, 0.0),) * 3
  steps = ortho.newton_schulz_schedule([(3.0, -3.2, 1.2), (2.0, -1.5, 0.5)])
  assert len(steps.coeffs) == 2
  with pytest.raises(ValueError, match="ns_coeffs"):
    ortho.newton_schulz_schedule("cubic")
  with pytest.raises(ValueError, match="ns_coeffs"):
    ortho.newton_schulz_schedule((1.0, 2.0))
  with pytest.raises(ValueError, match="ns_steps"):
    ortho.newton_schulz_schedule("quintic", 0)


def test_dimension_numbers_batch_the_other_axes():
  x = _matrix((3, 16, 24))  # (heads, in, out)
  dims = MuonDimensionNumbers(reduction_axis=1, output_axis=2)
  tx = qm.transforms.orthogonalize(dimension_numbers=dims)
  out, _ = tx.update({"w": jnp.asarray(x)}, tx.init(None))
  for h in range(3):
    np.testing.assert_allclose(out["w"][h], ref.newton_schulz(x[h]),
                               atol=2e-5)
  # Same as optax's own reshaping.
  theirs = orthogonalize_via_newton_schulz(
      jnp.asarray(x), jnp.asarray(ortho.QUINTIC), 5, eps=1e-7,
      dimension_numbers=dims)
  np.testing.assert_allclose(out["w"], theirs, atol=2e-5)


def test_non_matrices_are_an_error():
  tx = qm.transforms.orthogonalize()
  with pytest.raises(ValueError, match="not a matrix"):
    tx.update({"b": jnp.zeros((4, 5, 6))}, tx.init(None))
  tx = qm.transforms.orthogonalize(dimension_numbers=MuonDimensionNumbers())
  with pytest.raises(ValueError, match="0-D and 1-D"):
    tx.update({"b": jnp.zeros((5,))}, tx.init(None))


def test_leaf_order_barrier_keeps_values():
  leaves = {"a": jnp.asarray(_matrix((8, 12), 1)),
            "b": jnp.asarray(_matrix((12, 8), 2))}
  tx = qm.transforms.orthogonalize()
  out, _ = jax.jit(tx.update)(leaves, tx.init(None))
  for k in leaves:
    np.testing.assert_allclose(out[k], ref.newton_schulz(np.asarray(
        leaves[k])), atol=2e-5)


def test_scale_by_shape_rules():
  u = {"wide": jnp.ones((16, 64)), "tall": jnp.ones((64, 16))}
  width, _ = qm.transforms.scale_by_shape().update(u, optax.EmptyState())
  assert float(width["wide"][0, 0]) == pytest.approx(2.0)  # sqrt(64/16)
  assert float(width["tall"][0, 0]) == pytest.approx(1.0)
  rms, _ = qm.transforms.scale_by_shape(consistent_rms=0.2).update(
      u, optax.EmptyState())
  assert float(rms["wide"][0, 0]) == pytest.approx(0.2 * 8)
  assert float(rms["tall"][0, 0]) == pytest.approx(0.2 * 8)
