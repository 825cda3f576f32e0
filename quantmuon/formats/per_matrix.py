"""``PerMatrix``: a leaf stored as the batch of matrices Muon sees.

A leaf that is not a plain matrix (a stack of scanned layers ``(L, d, f)``,
MoE experts, an attention kernel ``(in, heads, head_dim)``, a conv filter)
is seen by Muon through a :class:`~quantmuon.formats.matrix_view.MatrixView`
as a batch of ``(fan_in, fan_out)`` matrices. Every other format lays an
array out in its own matrix view (leading axes merged into rows), whose
scale blocks, tiles and low-rank factors would then span several of Muon's
matrices, or the wrong matrix. ``PerMatrix`` stores each of Muon's
matrices on its own in an inner format, so a stack of L matrices keeps
exactly what L separate matrix leaves would: the same codes, scales and
factors, and the same bytes.

Its one part, ``"matrices"``, is the inner format's stored value of one
matrix with a leading batch axis on every array (as ``jax.vmap`` or
``jax.lax.map`` of the inner ``encode`` returns it).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from quantmuon.formats import placement
from quantmuon.formats.base import Format, Stored
from quantmuon.formats.float_ import Float
from quantmuon.formats.matrix_view import MatrixView

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class PerMatrix(Format):
  """Each matrix of a leaf's :class:`MatrixView` stored on its own.

  Encoding and decoding run one matrix at a time (``jax.lax.map``), so
  their float32 temporaries are one matrix's. Stochastic rounding keys are
  ``jax.random.fold_in(key, b)`` for matrix ``b``.

  Args:
    inner: the format of one matrix.
    view: how the leaf is seen as a batch of matrices.
  """

  inner: Format = Float()
  view: MatrixView = MatrixView.matrix()

  def __post_init__(self):
    if not isinstance(self.inner, Format):
      raise ValueError(f"inner must be a quantmuon format, got "
                       f"{self.inner!r}.")
    if not isinstance(self.view, MatrixView):
      raise ValueError(f"view must be a MatrixView, got {self.view!r}.")

  @property
  def holds_empty(self) -> bool:  # type: ignore[override]
    return self.inner.holds_empty

  def matrices(self, stored: Stored) -> Stored:
    """The inner stored value of every matrix (arrays with a batch axis)."""
    return stored["matrices"]

  def assemble(self, matrices: Stored, shape: tuple[int, ...],
               dtype=jnp.float32) -> Stored:
    """The stored leaf of the inner stored matrices (batch axis first)."""
    return Stored({"matrices": matrices}, self, shape, dtype)

  def _encode(self, x, *, key, previous) -> Stored:
    mats = self.view.to_matrices(x.astype(jnp.float32))
    before = None if previous is None else self.matrices(previous)

    def one(args):
      b, mat, prev = args
      k = None if key is None else jax.random.fold_in(key, b)
      return self.inner.encode(mat, key=k, previous=prev)

    inner = jax.lax.map(one, (jnp.arange(mats.shape[0], dtype=jnp.uint32),
                              mats, before))
    return self.assemble(inner, x.shape, x.dtype)

  def _decode(self, stored: Stored) -> Array:
    mats = jax.lax.map(lambda s: s.decode(), self.matrices(stored))
    return self.view.from_matrices(mats, stored.shape)

  def init(self, shape, dtype=jnp.float32) -> Stored:
    """Each matrix's initial value in the inner format (a ``Subspace``
    starts from its Gaussian R, not from the encoding of zeros)."""
    return self.init_like(
        jax.lax.optimization_barrier(jnp.zeros(shape, dtype)))

  def init_like(self, like: Array) -> Stored:
    """Each matrix's initial value in the inner format (see
    :meth:`Format.init_like`), placed like ``like``."""
    sharding = placement.explicit_sharding(like)
    if sharding is not None:
      shapes = jax.eval_shape(self._init_like, placement.unsharded(like))
      specs = placement.stored_specs(shapes, sharding.spec,
                                     sharding.mesh.shape)
      return placement.on_auto_axes(self._init_like, sharding, specs,
                                    like).with_spec(sharding.spec)
    stored = self._init_like(like)
    sharding = placement.known_sharding(like)
    return stored if sharding is None else placement.constrain(stored,
                                                               sharding)

  def _init_like(self, like: Array) -> Stored:
    inner = jax.lax.map(self.inner.init_like, self.view.to_matrices(like))
    return self.assemble(inner, like.shape)
