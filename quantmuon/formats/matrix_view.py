"""How Muon sees a leaf: a batch of matrices.

Muon orthogonalizes matrices. A leaf of any rank is seen through its
dimension numbers (optax's ``MuonDimensionNumbers``): the *reduction* axes
merge into the matrix's rows (fan_in), the *output* axes into its columns
(fan_out), and every other axis is a *batch* axis: a stack of scanned
layers, of MoE experts, of heads. Each matrix of the batch is on its own:
orthogonalized alone, scaled by its own shape, and its momentum stored
alone (:class:`quantmuon.formats.PerMatrix`).

A plain matrix is the view with no batch axes, reduction axis 0 and output
axis 1; it needs no transpose or reshape.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _axes(axes: int | Sequence[int], ndim: int, name: str
          ) -> tuple[int, ...]:
  """Axes as non-negative ints, in the order given (as optax keeps it)."""
  seq = (axes,) if isinstance(axes, int | np.integer) else tuple(axes)
  out = []
  for a in seq:
    if not -ndim <= int(a) < ndim:
      raise ValueError(
          f"{name} {a} is out of range for a leaf of rank {ndim}.")
    out.append(int(a) % ndim)
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class MatrixView:
  """The batch, reduction and output axes of a leaf of a given rank.

  Attributes:
    batch: the batch axes, ascending.
    reduction: the axes merged into each matrix's rows, in order.
    output: the axes merged into each matrix's columns, in order.
  """

  batch: tuple[int, ...]
  reduction: tuple[int, ...]
  output: tuple[int, ...]

  @classmethod
  def of(cls, ndim: int, reduction: int | Sequence[int],
         output: int | Sequence[int]) -> MatrixView:
    """The view of a rank-``ndim`` leaf with these reduction and output axes.

    Args:
      ndim: the leaf's rank (at least 2).
      reduction: reduction axis or axes (negative ones count from the end).
      output: output axis or axes.

    Returns:
      The view; every axis that is neither reduced nor output is a batch
      axis.

    Raises:
      ValueError: for a rank below 2, empty, overlapping or out-of-range
        axes.
    """
    if ndim < 2:
      raise ValueError(
          f"a leaf of rank {ndim} has no matrix to orthogonalize; route "
          "0-D and 1-D leaves to AdamW.")
    red = _axes(reduction, ndim, "reduction axis")
    out = _axes(output, ndim, "output axis")
    if not red or not out or set(red) & set(out) or (
        len(set(red + out)) != len(red + out)):
      raise ValueError(
          f"reduction axes {red} and output axes {out} must be non-empty "
          "and disjoint.")
    batch = tuple(a for a in range(ndim) if a not in red + out)
    return cls(batch, red, out)

  @classmethod
  def matrix(cls) -> MatrixView:
    """The plain matrix: reduction axis 0, output axis 1."""
    return cls((), (0,), (1,))

  @property
  def is_matrix(self) -> bool:
    """Whether the leaf is a plain matrix (no transpose or reshape)."""
    return self == MatrixView.matrix()

  @property
  def ndim(self) -> int:
    return len(self.batch) + len(self.reduction) + len(self.output)

  @property
  def permutation(self) -> tuple[int, ...]:
    return self.batch + self.reduction + self.output

  def batch_size(self, shape: Sequence[int]) -> int:
    """How many matrices a leaf of ``shape`` holds."""
    return math.prod(shape[a] for a in self.batch)

  def matrix_shape(self, shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of each matrix of a leaf of ``shape``."""
    return (math.prod(shape[a] for a in self.reduction),
            math.prod(shape[a] for a in self.output))

  def stacked_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
    """``(batch, fan_in, fan_out)`` of a leaf of ``shape``."""
    return (self.batch_size(shape),) + self.matrix_shape(shape)

  def to_matrices(self, x: Array) -> Array:
    """The leaf as a ``(batch, fan_in, fan_out)`` stack of matrices."""
    stacked = self.stacked_shape(x.shape)
    if self.permutation != tuple(range(x.ndim)):
      x = jnp.transpose(x, self.permutation)
    return x.reshape(stacked)

  def from_matrices(self, mats: Array, shape: Sequence[int]) -> Array:
    """The inverse of :meth:`to_matrices`, for a leaf of ``shape``."""
    permuted = [shape[a] for a in self.permutation]
    x = mats.reshape(permuted)
    if self.permutation == tuple(range(len(shape))):
      return x
    return jnp.transpose(x, np.argsort(self.permutation))

