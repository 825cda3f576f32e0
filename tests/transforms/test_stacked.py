"""The stacked layout's bookkeeping on one device (8 devices: test_sharding).

A one-device mesh runs the same stacking, padding and unstacking as a
larger one (the constraints are no-ops), so the order, shapes and
orientation of the results are checked here against per-matrix calls.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import AxisType

import quantmuon as qm
from quantmuon.transforms import newton_schulz, stacked

SCHEDULE = newton_schulz.newton_schulz_schedule("quintic", 5)


def _mesh():
  return jax.make_mesh((1,), ("x",), axis_types=(AxisType.Auto,))


def test_groups_take_both_orientations_in_first_seen_order():
  shapes = [(4, 6), (6, 4), (3, 4, 6), (5, 5), (4, 6)]
  assert stacked.group_by_shape(shapes) == [[0, 1, 2, 4], [3]]


def test_map_stacked_equals_the_function_of_each_matrix():
  keys = jax.random.split(jax.random.key(0), 5)
  mats = [jax.random.normal(keys[0], (4, 6)),
          jax.random.normal(keys[1], (6, 4)),  # tall: fed transposed
          jax.random.normal(keys[2], (3, 4, 6)),  # a batch of three
          jax.random.normal(keys[3], (5, 7)),  # lone
          jax.random.normal(keys[4], (4, 6))]
  scales = np.arange(1.0, 8.0)

  def fn(x):  # depends on each matrix's place in the batch: order matters
    return x * scales[:x.shape[0], None, None] if x.ndim == 3 else -x

  with jax.sharding.set_mesh(_mesh()):
    got = stacked.map_stacked(fn, mats, _mesh())
  assert [g.shape for g in got] == [m.shape for m in mats]
  np.testing.assert_array_equal(got[3], -mats[3])
  # The stack is [m0, m1.T, m2[0], m2[1], m2[2], m4]: scales 1..6.
  np.testing.assert_array_equal(got[0], mats[0] * 1)
  np.testing.assert_array_equal(got[1], mats[1] * 2)
  np.testing.assert_array_equal(got[2], mats[2] * scales[2:5, None, None])
  np.testing.assert_array_equal(got[4], mats[4] * 6)


def test_stacked_newton_schulz_matches_each_leaf():
  keys = jax.random.split(jax.random.key(1), 3)
  leaves = [jax.random.normal(keys[0], (16, 24)),
            jax.random.normal(keys[1], (24, 16)),
            jax.random.normal(keys[2], (16, 40))]
  views = [qm.formats.MatrixView.matrix()] * 3
  with jax.sharding.set_mesh(_mesh()):
    got = newton_schulz.orthogonalize_stacked(leaves, views, SCHEDULE, 1e-7,
                                              _mesh())
  for g, u in zip(got, leaves, strict=True):
    want = newton_schulz.newton_schulz(u, SCHEDULE)
    np.testing.assert_allclose(g, want, atol=2e-6)


def test_resolve_mesh():
  assert stacked.resolve_mesh("leaf", _mesh()) is None
  assert stacked.resolve_mesh("auto") is None  # no mesh in the context
  assert stacked.resolve_mesh("auto", _mesh()) is None  # one device
  with pytest.raises(ValueError, match="ns_layout='stacked' needs a mesh"):
    stacked.resolve_mesh("stacked")
  with pytest.raises(ValueError, match="ns_layout"):
    stacked.resolve_mesh("rows")
