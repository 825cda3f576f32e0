"""Stacked leaves (scanned layers, MoE experts) are batches of matrices:
each matrix is orthogonalized, scaled and stored on its own, exactly as if
it were a leaf of its own."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from optax.contrib import MuonDimensionNumbers

import quantmuon as qm
from quantmuon import routing

PRESETS = {
    "muon": qm.muon,
    "muon_8bit": qm.muon_8bit,
    "muon_4bit": qm.muon_4bit,
    "muonq": qm.muonq,
    "muon_grasp": qm.muon_grasp,
    "muon_lowbit": qm.muon_lowbit,
    "muon_lowbit_2bit": lambda lr, **kw: qm.muon_lowbit(lr, bits=2, **kw),
}
LAYERS, M, N = 3, 48, 80
STEPS = 3


def _grads(shape: tuple[int, ...], steps: int = STEPS) -> list[jax.Array]:
  rng = np.random.default_rng(0)
  low = rng.normal(size=shape[:-1] + (4,)) @ rng.normal(size=(4, shape[-1]))
  return [jnp.asarray(low * (1 + 0.1 * t) + 0.3 * rng.normal(size=shape),
                      jnp.float32) for t in range(steps)]


def _stored_matrices(state) -> list:
  """Each Muon leaf's stored momentum, a PerMatrix value split into its
  matrices' stored values."""
  inner = state.inner_states["muon"].inner_state[0].momentum
  out = []
  for s in jax.tree.leaves(inner, is_leaf=qm.formats.is_stored):
    if isinstance(s.format, qm.formats.PerMatrix):
      parts = s.format.matrices(s)
      size = jax.tree.leaves(parts)[0].shape[0]
      out += [jax.tree.map(lambda a, b=b: a[b], parts) for b in range(size)]
    else:
      out.append(s)
  return out


def _compare(make, stacked_params, split, stack_axes, grads):
  """Runs ``make`` on the stacked tree and on its matrices as separate
  leaves (``split`` maps a stacked gradient tree to the separate one, in
  the separate leaves' order), and returns the worst relative update
  difference, the stored values of both, and both states' bytes."""
  ours = make(1e-2, stack_axes=stack_axes, min_size=0)
  theirs = make(1e-2, min_size=0)
  separate = split(stacked_params)
  s_ours, s_theirs = ours.init(stacked_params), theirs.init(separate)
  up_ours, up_theirs = jax.jit(ours.update), jax.jit(theirs.update)
  worst = 0.0
  for g in grads:
    u_ours, s_ours = up_ours(g, s_ours, stacked_params)
    u_theirs, s_theirs = up_theirs(split(g), s_theirs, separate)
    for a, b in zip(jax.tree.leaves(split(u_ours)),
                    jax.tree.leaves(u_theirs), strict=True):
      worst = max(worst, float(jnp.max(jnp.abs(a - b))
                               / jnp.max(jnp.abs(b))))
  return (worst, _stored_matrices(s_ours), _stored_matrices(s_theirs),
          qm.nbytes(s_ours), qm.nbytes(s_theirs))


def _assert_same_storage(ours, theirs):
  assert len(ours) == len(theirs)
  for a, b in zip(ours, theirs, strict=True):
    assert a.format == b.format
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_stack_is_its_matrices_as_separate_leaves(name):
  params = {"layers": {"mlp": {"kernel": jnp.zeros((LAYERS, M, N))}}}

  def split(tree):
    w = tree["layers"]["mlp"]["kernel"]
    return {f"l{i}": w[i] for i in range(LAYERS)}

  grads = [{"layers": {"mlp": {"kernel": g}}}
           for g in _grads((LAYERS, M, N))]
  worst, ours, theirs, b_ours, b_theirs = _compare(
      PRESETS[name], params, split, {"layers": 0}, grads)
  assert worst <= 1e-4, worst
  _assert_same_storage(ours, theirs)
  assert b_ours == b_theirs


@pytest.mark.parametrize("layout", ["maxtext_mlp", "maxtext_query",
                                    "maxtext_out", "moe", "scanned_moe"])
def test_stack_layouts(layout):
  """MaxText's layer axis in position 1, attention kernels in a stack, and
  MoE experts (scanned or not): per matrix, as separate leaves."""
  rng = np.random.default_rng(1)
  d, f, heads, head_dim = 32, 48, 4, 8
  if layout == "maxtext_mlp":  # (in, L, out)
    shape, path, axes = (d, LAYERS, f), ("layers", "mlp", "kernel"), {
        "layers": 1}
    matrices = lambda w: [w[:, i] for i in range(LAYERS)]  # noqa: E731
  elif layout == "maxtext_query":  # (in, L, heads, head_dim)
    shape, path, axes = (d, LAYERS, heads, head_dim), (
        "layers", "query", "kernel"), {"layers": 1}
    matrices = lambda w: [w[:, i].reshape(d, -1)  # noqa: E731
                          for i in range(LAYERS)]
  elif layout == "maxtext_out":  # (heads, L, head_dim, out)
    shape, path, axes = (heads, LAYERS, head_dim, d), (
        "layers", "out", "kernel"), {"layers": 1}
    matrices = lambda w: [w[:, i].reshape(-1, d)  # noqa: E731
                          for i in range(LAYERS)]
  elif layout == "moe":  # (experts, in, out)
    shape, path, axes = (4, d, f), ("moe", "wi"), {"wi": 0}
    matrices = lambda w: [w[e] for e in range(4)]  # noqa: E731
  else:  # (L, experts, in, out)
    shape, path, axes = (2, 3, d, f), ("layers", "moe", "wi"), {
        "layers": 0, "moe": 1}
    matrices = lambda w: [w[i, e] for i in range(2)  # noqa: E731
                          for e in range(3)]

  def nest(x):
    for key in reversed(path):
      x = {key: x}
    return x

  def leaf(tree):
    for key in path:
      tree = tree[key]
    return tree

  def split(tree):
    return {f"m{i}": m for i, m in enumerate(matrices(leaf(tree)))}

  params = nest(jnp.asarray(rng.normal(size=shape), jnp.float32))
  grads = [nest(g) for g in _grads(shape, 2)]
  for name in ("muon", "muon_lowbit"):
    worst, ours, theirs, _, _ = _compare(PRESETS[name], params, split, axes,
                                         grads)
    assert worst <= 1e-4, (name, worst)
    _assert_same_storage(ours, theirs)


def test_an_undeclared_stack_stops_init_with_the_fix():
  params = {"layers": {"linear": {"kernel": jnp.zeros((4, 64, 256)),
                                  "bias": jnp.zeros((4, 256))}}}
  with pytest.raises(routing.AmbiguousLeafError,
                     match=r"stack_axes=\{'layers': 0\}"):
    qm.muon_8bit(1e-3).init(params)
  # A stacked 1-D conv looks like a 2-D conv; under a layers path it is
  # not guessed either.
  conv = {"blocks": {"conv": {"kernel": jnp.zeros((4, 3, 8, 16))}}}
  with pytest.raises(routing.AmbiguousLeafError, match="stack_axes"):
    qm.muon(1e-3).init({"layers": conv})
  # Nor a stacked conv whose bias is stacked too.
  conv = {"conv": {"kernel": jnp.zeros((4, 3, 8, 16)),
                   "bias": jnp.zeros((4, 16))}}
  with pytest.raises(routing.AmbiguousLeafError, match="stack_axes"):
    qm.muon(1e-3).init({"encoder": conv})
  # Declared, both train per matrix.
  views = routing.views(params, stack_axes={"layers": 0})
  assert views["layers"]["linear"]["kernel"] == qm.formats.MatrixView(
      (0,), (1,), (2,))
  assert routing.muon_labels(params, stack_axes={"layers": 0})[
      "layers"]["linear"]["bias"] == "adam"


def test_axis_names_in_metadata_declare_the_stack():
  """linen's nn.Partitioned names (nn.scan's metadata_params) and Flax NNX
  out_sharding names (nnx.vmap's transform_metadata) mark the stack."""
  from flax import linen as nn
  from flax import nnx

  boxed = {"layers": {"mlp": {"kernel": nn.Partitioned(
      jnp.zeros((3, 16, 32)), names=("layers", "embed", "mlp"))}}}
  assert routing.views(boxed)["layers"]["mlp"]["kernel"].value == \
      qm.formats.MatrixView((0,), (1,), (2,))

  class Block(nnx.Module):
    def __init__(self, rngs):
      self.linear = nnx.Linear(
          8, 16, rngs=rngs, kernel_init=nnx.with_partitioning(
              nnx.initializers.lecun_normal(), (None, "model")))

  @nnx.split_rngs(splits=3)
  @nnx.vmap(in_axes=(0,), out_axes=0,
            transform_metadata={nnx.PARTITION_NAME: "layers"})
  def make(rngs):
    return Block(rngs)

  with jax.set_mesh(jax.make_mesh((1,), ("model",))):
    model = make(nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  labels = qm.muon_labels(state)
  assert labels["linear"]["kernel"].get_value() == "muon"
  view = routing.views(state)["linear"]["kernel"].get_value()
  assert view == qm.formats.MatrixView((0,), (1,), (2,))


def test_optax_dimension_numbers_give_batch_axes():
  """optax's MuonDimensionNumbers on a stack: the other axes are batch
  axes, the state is per matrix."""
  params = {"w": jnp.zeros((3, M, N))}
  dims = {"w": MuonDimensionNumbers(reduction_axis=1, output_axis=2)}
  state = qm.muonq(1e-2, muon_weight_dimension_numbers=dims,
                   min_size=0).init(params)
  stored = state.inner_states["muon"].inner_state[0].momentum["w"]
  assert isinstance(stored.format, qm.formats.PerMatrix)
  k = min(M, N) // 16
  assert stored.format.matrices(stored)["P"]["codes"].shape[:2] == (3, M)
  assert stored.format.matrices(stored)["R"]["codes"].shape[:2] == (3, N)
  assert stored.format.inner.rank_for((M, N)) == k


def test_per_matrix_format_round_trips_and_places_each_matrix():
  fmt = qm.formats.PerMatrix(qm.formats.Blockwise(bits=8, block_size=64),
                             qm.formats.MatrixView.of(3, 0, 2))
  x = jnp.asarray(np.random.default_rng(2).normal(size=(16, 3, 32)),
                  jnp.float32)
  stored = fmt.encode(x)
  np.testing.assert_allclose(fmt.decode(stored), x, atol=0.05)
  # Matrix b is x[:, b, :] (reduction axis 0, output 2, batch 1), stored
  # as a Blockwise leaf of its own.
  for b in range(3):
    alone = qm.formats.Blockwise(bits=8, block_size=64).encode(x[:, b, :])
    np.testing.assert_array_equal(fmt.matrices(stored)["codes"][b],
                                  alone["codes"])
