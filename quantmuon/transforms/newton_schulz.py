"""Newton-Schulz orthogonalization, the core of Muon.

Keller Jordan's Muon: ``X = U / (||U||_F + eps)``, transposed when it has
more rows than columns, then ``X <- a X + (b A + c A^2) X`` with ``A = X X^T``
for each step's coefficients (a, b, c). Leaves of rank > 2 are reshaped by
``MuonDimensionNumbers`` into a batch of matrices. Unlike
``optax.contrib.muon``, a plain matrix is not run under ``vmap`` over a batch
of one (which costs about a third of the time and most of the temporary
memory), and leaves are processed one after another so their
temporaries do not pile up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from quantmuon.formats.base import check_choice
from quantmuon.transforms import _tree, stacked

Array = jax.Array

QUINTIC = (3.4445, -4.7750, 2.0315)
# Amsel et al., "The Polar Express" (arXiv 2505.16932), five steps; the input
# is normalized by 1.02 * ||U||_F.
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
POLAR_EXPRESS_SAFETY = 1.02
# Steps after the fifth: Newton-Schulz's quintic, whose fixed point is 1 (the
# fifth triple's is about 1.035), as the Polar Express reference code does.
POLAR_EXPRESS_TAIL = (1.875, -1.25, 0.375)


class NewtonSchulz(NamedTuple):
  """A resolved iteration: one (a, b, c) per step, and the input margin."""
  coeffs: tuple[tuple[float, float, float], ...]
  safety: float


def newton_schulz_schedule(ns_coeffs: Any = "quintic",
                           ns_steps: int | None = 5) -> NewtonSchulz:
  """Resolves ``ns_coeffs`` and ``ns_steps`` to per-step coefficients.

  Args:
    ns_coeffs: ``"quintic"`` (Keller Jordan's triple every step),
      ``"polar_express"`` (five tuned triples, then ``POLAR_EXPRESS_TAIL``
      for any further steps), one ``(a, b, c)`` triple, or a sequence of
      triples (one per step; its length sets the number of steps).
    ns_steps: number of steps for a single triple or a preset.

  Returns:
    A ``NewtonSchulz`` with one triple per step.
  """
  steps = _tree.static_int(ns_steps, "ns_steps", 5)
  if steps < 1:
    raise ValueError(f"ns_steps must be >= 1, got {steps}.")
  safety = 1.0
  if isinstance(ns_coeffs, str):
    if ns_coeffs == "quintic":
      triples = [QUINTIC] * steps
    elif ns_coeffs == "polar_express":
      triples = list(POLAR_EXPRESS[:steps])
      triples += [POLAR_EXPRESS_TAIL] * (steps - len(triples))
      safety = POLAR_EXPRESS_SAFETY
    else:
      raise ValueError(
          "ns_coeffs must be 'quintic', 'polar_express', an (a, b, c) triple "
          f"or a sequence of triples, got {ns_coeffs!r}.")
  else:
    arr = np.asarray(ns_coeffs, dtype=np.float64)
    if arr.shape == (3,):
      triples = [tuple(arr)] * steps
    elif arr.ndim == 2 and arr.shape[1] == 3 and arr.shape[0] >= 1:
      triples = [tuple(row) for row in arr]
    else:
      raise ValueError(
          "ns_coeffs must be an (a, b, c) triple or a sequence of triples, "
          f"got an array of shape {arr.shape}.")
  return NewtonSchulz(tuple(tuple(float(c) for c in t) for t in triples),
                      safety)


def newton_schulz(x: Array, schedule: NewtonSchulz, eps: float = 1e-7
                  ) -> Array:
  """Orthogonalizes one matrix (or a batch, over leading axes).

  Args:
    x: array of shape (..., m, n).
    schedule: from :func:`newton_schulz_schedule`.
    eps: added to the Frobenius norm before dividing.

  Returns:
    float32 array of ``x``'s shape, approximately ``U V^T`` of its SVD.
  """
  x = x.astype(jnp.float32)
  transposed = x.shape[-2] > x.shape[-1]
  if transposed:
    x = jnp.swapaxes(x, -1, -2)
  norm = jnp.sqrt(jnp.sum(x * x, axis=(-2, -1), keepdims=True))
  x = x / (norm * schedule.safety + eps)
  for a, b, c in schedule.coeffs:
    gram = x @ jnp.swapaxes(x, -1, -2)
    x = a * x + (b * gram + c * gram @ gram) @ x
  return jnp.swapaxes(x, -1, -2) if transposed else x


def orthogonalize_leaf(u: Array, schedule: NewtonSchulz, eps: float,
                       dim_nums: _tree.DimNums | None) -> Array:
  """Newton-Schulz on one leaf, reshaped by its dimension numbers."""
  return from_matrices(
      newton_schulz(to_matrices(u, dim_nums), schedule, eps), u, dim_nums)


def orthogonalize_stacked(leaves: Sequence[Array],
                          dims: Sequence[_tree.DimNums | None],
                          schedule: NewtonSchulz, eps: float,
                          mesh: Any) -> list[Array]:
  """Newton-Schulz of every leaf in the stacked layout on ``mesh``.

  Args:
    leaves: the updates' leaves.
    dims: their dimension numbers (None for a plain matrix).
    schedule: from :func:`newton_schulz_schedule`.
    eps: added to each Frobenius norm.
    mesh: from :func:`quantmuon.transforms.stacked.resolve_mesh`.

  Returns:
    The orthogonalized leaves, in their shapes and dtypes.
  """
  def run(leaves):
    mats = [to_matrices(u, d) for u, d in zip(leaves, dims, strict=True)]
    outs = stacked.map_stacked(
        lambda x: newton_schulz(x, schedule, eps), mats, mesh)
    return [from_matrices(x, u, d)
            for x, u, d in zip(outs, leaves, dims, strict=True)]

  return stacked.on_auto_axes(run, leaves, mesh)


def to_matrices(u: Array, dim_nums: _tree.DimNums | None) -> Array:
  """A leaf as the matrix (or batch of matrices) Newton-Schulz takes.

  Args:
    u: the leaf.
    dim_nums: its dimension numbers, or None for a plain matrix.

  Returns:
    ``u`` itself for a plain matrix, else ``u`` with its batch, reduction
    and output axes moved and merged into shape ``(batch, fan_in,
    fan_out)``.
  """
  batch, red, out = _tree.matrix_axes(u.shape, dim_nums)
  if not batch and red == (0,) and out == (1,):
    return u
  perm = batch + red + out
  sizes = [u.shape[a] for a in perm]
  nb, nr = len(batch), len(red)
  return jnp.transpose(u, perm).reshape(
      int(np.prod(sizes[:nb])), int(np.prod(sizes[nb:nb + nr])),
      int(np.prod(sizes[nb + nr:])))


def from_matrices(x: Array, u: Array, dim_nums: _tree.DimNums | None
                  ) -> Array:
  """The inverse of :func:`to_matrices`: ``x`` in ``u``'s layout and dtype.

  Args:
    x: the output of Newton-Schulz on ``to_matrices(u, dim_nums)``.
    u: the leaf (only its shape and dtype are read).
    dim_nums: its dimension numbers, or None for a plain matrix.

  Returns:
    ``x`` with ``u``'s shape and dtype.
  """
  batch, red, out = _tree.matrix_axes(u.shape, dim_nums)
  if not batch and red == (0,) and out == (1,):
    return x.astype(u.dtype)
  perm = batch + red + out
  result = x.reshape([u.shape[a] for a in perm])
  return jnp.transpose(result, np.argsort(perm)).astype(u.dtype)


def leaf_dimension_numbers(dimension_numbers: Any, updates: Any
                           ) -> list[_tree.DimNums | None]:
  """The dimension numbers of each leaf of ``updates``, in leaf order.

  Args:
    dimension_numbers: as for :func:`orthogonalize`.
    updates: the updates tree.

  Returns:
    One ``MuonDimensionNumbers`` (or None for a plain matrix) a leaf.

  Raises:
    ValueError: for a leaf that has no matrix to orthogonalize, before
      anything is traced.
  """
  lookup = _tree.dimension_numbers_by_path(dimension_numbers, updates)
  paths = jax.tree_util.tree_flatten_with_path(updates)[0]
  dims = [lookup(path) for path, _ in paths]
  for (_, leaf), dim in zip(paths, dims, strict=True):
    _tree.matrix_axes(leaf.shape, dim)
  return dims


def orthogonalize(
    ns_coeffs: str | Sequence[float] | Sequence[Sequence[float]] = "quintic",
    ns_steps: int | None = 5,
    eps: float = 1e-7,
    dimension_numbers: Any = None,
    ns_layout: str = "auto",
    mesh: Any = None,
) -> optax.GradientTransformation:
  """Replaces each update by its Newton-Schulz orthogonalization.

  Follows Keller Jordan's Muon (quintic iteration) or the Polar Express
  (Amsel et al. 2025). Stateless; ``params`` are not used. On a mesh the
  default lays the matrices out whole on devices (see
  :mod:`quantmuon.transforms.stacked`).

  Args:
    ns_coeffs: ``"quintic"``, ``"polar_express"``, an ``(a, b, c)`` triple, or
      a sequence of triples, one per step.
    ns_steps: steps for a preset or a single triple.
    eps: added to the Frobenius norm of each matrix before dividing.
    dimension_numbers: None (every leaf is a matrix), a
      ``MuonDimensionNumbers`` for all leaves, a tree of them with the
      parameters' structure, or a callable of the updates returning one.
      Leaves of rank > 2 need them; rank 0 and 1 leaves are an error.
    ns_layout: ``auto`` (the stacked layout when a mesh of several devices
      is given as ``mesh``, set in the context when ``update`` is traced
      (``jax.set_mesh``) or carried by the updates' types (sharded arrays
      under ``jit``); else leaf by leaf), ``stacked`` (same-shape
      matrices stacked and the stack split over the mesh, each matrix whole
      on one device; a lone matrix split along its long axis) or ``leaf``
      (one leaf at a time, its placement left to XLA).
    mesh: the mesh of the stacked layout; None finds it as above.

  Returns:
    An ``optax.GradientTransformation`` with empty state.
  """
  schedule = newton_schulz_schedule(ns_coeffs, ns_steps)
  check_choice(ns_layout, "ns_layout", stacked.LAYOUTS)

  def update_fn(updates, state, params=None):
    del params
    leaves, treedef = jax.tree.flatten(updates)
    dims = leaf_dimension_numbers(dimension_numbers, updates)
    on = stacked.resolve_mesh(ns_layout, mesh, leaves)
    if on is not None:
      outs = orthogonalize_stacked(leaves, dims, schedule, eps, on)
      return treedef.unflatten(outs), state
    outs = _tree.map_in_order(
        lambda i, leaf: orthogonalize_leaf(leaf, schedule, eps, dims[i]),
        leaves)
    return treedef.unflatten(outs), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)
