"""``Subspace``: top-k factors plus a residual, each in its own format.

MuonQ (arXiv 2605.11396) and 4-bit-Muon-GRASP (ICLR 2026) both find that
low-bit error in Muon's momentum hurts most in its top singular subspace,
which Newton-Schulz amplifies. They store the momentum M (m x n) as
``P @ R.T + residual`` with P (m x k) orthonormal and R (n x k), found by a
power iteration warm-started from the R stored at the previous step:

  Q = R / column_norms(R);  P = orth(M @ Q);  R = M.T @ P;
  residual = M - P @ R.T

The factors and the residual are then stored in their own formats. The
full-size products ``P @ R.T`` of decode and of the residual are computed a
block of rows at a time (:func:`add_low_rank`), so neither needs a float32
temporary of the whole matrix. P and R share a format, and are decoded
as one stacked array where the format allows (:meth:`Subspace.decode_factors`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from quantmuon import memory
from quantmuon.formats import layout, placement, small_linalg
from quantmuon.formats.base import Format, Stored, positive_int
from quantmuon.formats.grid import Grid
from quantmuon.formats.kernel_layout import Factored
from quantmuon.formats.tiled import Axiswise, Blockwise

Array = jax.Array
# Elements of one block of rows of P @ R.T in :func:`add_low_rank` (4 MiB).
BLOCK_ELEMENTS = 2 ** 20


def row_blocks(m: int, n: int, block_elements: int = BLOCK_ELEMENTS) -> int:
  """How many blocks :func:`add_low_rank` cuts m rows of n into.

  The smallest power of two that divides m and brings a block to at most
  ``block_elements``, or the largest power of two dividing m when none
  does (1 for odd m: one block, the whole product).
  """
  blocks = 1
  while m * n > blocks * block_elements and m % (2 * blocks) == 0:
    blocks *= 2
  return blocks


def add_low_rank(x: Array, p: Array, r: Array, *, subtract: bool = False,
                 block_elements: int = BLOCK_ELEMENTS) -> Array:
  """``x + p @ r.T`` (or ``x - p @ r.T``), a block of rows at a time.

  Block i holds the rows ``i, i + b, i + 2b, ...`` of the ``b =``
  :func:`row_blocks` blocks: a loop over the middle axis of ``x`` reshaped
  to ``(m / b, b, n)``, each block one matrix product written into ``x``'s
  rows in place. So the float32 temporary is one block, not a matrix of
  ``x``'s size. The loop carries ``x`` in its own shape (the reshapes are
  inside the body), so the matrix that the power iteration reads is the
  buffer the loop updates: XLA needs no second copy of it. Every block has
  rows in every shard of a row-sharded ``x`` (contiguous blocks would make
  a sharded program gather the whole matrix to slice them). A block's
  rows are the same dot products, over all k, as the whole product's: on
  XLA's CPU backend the result equals the unblocked ``x + p @ r.T`` bit
  for bit (tested). Tiles that also split the columns do not (see
  :mod:`quantmuon.kernels.subspace`).

  Args:
    x: float32 matrix (m x n).
    p: float32 matrix (m x k).
    r: float32 matrix (n x k).
    subtract: compute ``x - p @ r.T``.
    block_elements: the most elements a block should hold.

  Returns:
    float32 matrix of ``x``'s shape.
  """
  m, n = x.shape
  blocks = row_blocks(m, n, block_elements)

  def combine(xb: Array, pb: Array) -> Array:
    low = pb @ r.T
    return xb - low if subtract else xb + low

  if blocks == 1:
    return combine(x, p)
  p_blocks = p.reshape(m // blocks, blocks, p.shape[1])

  def body(i: Array, out: Array) -> Array:
    out = out.reshape(m // blocks, blocks, n)
    block = combine(jax.lax.dynamic_index_in_dim(out, i, 1, keepdims=False),
                    jax.lax.dynamic_index_in_dim(p_blocks, i, 1,
                                                 keepdims=False))
    return jax.lax.dynamic_update_index_in_dim(out, block, i, 1).reshape(m, n)

  return jax.lax.fori_loop(0, blocks, body, x)


def orthonormalize(a: Array) -> Array:
  """An orthonormal basis of the columns of a tall ``a`` (m x k), m >= k.

  Shifted Cholesky QR, twice (CholeskyQR2): ``a <- a @ inv(chol(a^T a))^T``.
  Only k x k factorizations and matrix products, where a Householder QR is
  slow on XLA's CPU backend (0.73 s against 0.04 s for 4096 x 256 here) and
  gets no help from the MXU. The k x k factor and inverse are
  :mod:`quantmuon.formats.small_linalg`'s (on the CPU plain XLA loops, no
  LAPACK), and the inverse is applied as a product. For ``a`` of full
  column rank this is Householder QR's Q up to column
  signs. A small shift (1e-6 of the mean eigenvalue) keeps most
  rank-deficient inputs finite; where its Cholesky factorization breaks
  down, a shift that provably cannot is used instead. Columns beyond the
  rank are then amplified rounding noise: norms up to about one, and not
  orthogonal to the rest. No result depends on it, since the
  residual absorbs what P misses: ``M = P R^T + residual`` with ``R = M^T
  P`` holds for any P.

  The program is kept small, since every leaf compiles its own copy (each
  Cholesky factorization and inverse brings small transposing kernels that
  are slow to compile): the two passes are one loop body, and the two
  factorizations of a pass (small shift, safe shift) one Cholesky in a
  loop of two. Its values are those of the two passes written out, bit
  for bit, and it is differentiable like them.

  Args:
    a: float32 matrix.

  Returns:
    float32 matrix of ``a``'s shape; its columns are orthonormal (up to the
    shift) when ``a`` has full column rank.
  """
  m, k = a.shape
  eye = jnp.eye(k, dtype=a.dtype)
  tiny = jnp.finfo(a.dtype).tiny
  # Fukaya et al.'s shifted CholeskyQR (SIAM J. Sci. Comput. 2020): a shift
  # of 11 (m k + k (k + 1)) u ||a||_F^2 never lets the factorization break
  # down in floating point.
  safe = 11 * (m * k + k * (k + 1)) * float(jnp.finfo(a.dtype).eps) / 2

  def factor(gram: Array) -> Array:
    trace = jnp.trace(gram)

    # A nearly rank-deficient ``a`` (a warm start whose columns have
    # aligned, as after a rank-one first step) can break the small
    # shift's factorization down to NaN; only then the safe shift's
    # factorization, the loop's second, is kept. A loop of static length
    # (a scan), not a while loop, so that reverse-mode differentiation
    # goes through it.
    def attempt(i: Array, chol: Array) -> Array:
      shift = jnp.where(i == 0, 1e-6 * trace / k, safe * trace)
      fresh = small_linalg.cholesky(gram + (shift + tiny) * eye)
      return jnp.where(jnp.all(jnp.isfinite(chol)), chol, fresh)

    return jax.lax.fori_loop(0, 2, attempt,
                             jnp.full((k, k), jnp.nan, a.dtype))

  def one_pass(_: Array, a: Array) -> Array:
    return a @ small_linalg.lower_inverse(factor(a.T @ a)).T

  return jax.lax.fori_loop(0, 2, one_pass, a)


def decodes_rows_apart(fmt: Format) -> bool:
  """Whether ``fmt`` decodes each row of a matrix from that row's codes
  and its row tile's scales alone, with stored parts laid out by rows
  (codes) and row tiles (scales): ``Blockwise``, ``Axiswise``, ``Grid``.
  Then zero rows appended to every part leave the decoded leading rows as
  they are, bit for bit."""
  return isinstance(fmt, Blockwise | Axiswise | Grid)


@functools.cache
def _stored_shapes(fmt: Format, rows: int, cols: int) -> Stored:
  """The shapes of ``fmt``'s stored value of a ``(rows, cols)`` matrix."""
  return jax.eval_shape(lambda: fmt.init((rows, cols)))


def _padded(stored: Stored, like: Stored) -> list[Array]:
  """The parts of ``stored`` zero-padded to the parts of ``like`` (a
  stored value of more rows, or its shapes)."""
  return [jnp.pad(leaf, [(0, w - d) for d, w in zip(leaf.shape, want.shape,
                                                    strict=True)])
          for leaf, want in zip(jax.tree.leaves(stored),
                                jax.tree.leaves(like), strict=True)]


@dataclasses.dataclass(frozen=True)
class Subspace(Format):
  """Momentum as top-k factors P, R and a residual.

  Args:
    rank: k, the number of factor columns; None derives it from
      ``rank_divisor``.
    rank_divisor: ``k = max(1, min(m, n) // rank_divisor)`` when ``rank`` is
      None (16 in both papers).
    power_iters: power iterations a step (both papers use 1).
    factors: format of P and R.
    residual: format of the residual (stored in the array's own shape).
    seed: seed of the Gaussian start of R at the first step.
  """

  rank: int | None = None
  rank_divisor: int = 16
  power_iters: int = 1
  factors: Format = Blockwise(bits=8, block_size=128)
  residual: Format = Grid(bits=4)
  seed: int = 0

  factor_axes: ClassVar[Mapping[str, str]] = {"P": "rows", "R": "cols"}

  def __post_init__(self):
    if self.rank is not None:
      positive_int(self.rank, "rank")
    positive_int(self.rank_divisor, "rank_divisor")
    positive_int(self.power_iters, "power_iters")
    for name in ("factors", "residual"):
      if not isinstance(getattr(self, name), Format):
        raise ValueError(f"{name} must be a quantmuon format, got "
                         f"{getattr(self, name)!r}.")

  def rank_for(self, shape: tuple[int, ...]) -> int:
    """k for an array of ``shape``; raises if ``rank`` exceeds min(m, n)."""
    m, n = layout.matrix_shape(shape)
    if self.rank is None:
      return max(1, min(m, n) // self.rank_divisor)
    if self.rank > min(m, n):
      raise ValueError(
          f"rank={self.rank} is larger than min(m, n)={min(m, n)} for a "
          f"parameter of shape {shape}; lower rank or use rank_divisor.")
    return self.rank

  def _start(self, n: int, k: int) -> Array:
    """The fixed Gaussian start of R, column-normalized.

    Computed when traced, as a constant of the program: generated inside
    it, the random bits cost a large fusion to compile in every step. It is
    computed outside any mesh context (a constant has no sharding), which
    an Explicit-axes encode (see ``placement``) would otherwise impose, and
    returned as a NumPy array, which carries no mesh of a
    ``jax.set_mesh`` context either.
    """
    no_mesh = jax.sharding.AbstractMesh((), ())
    with jax.ensure_compile_time_eval(), jax.sharding.use_abstract_mesh(
        no_mesh):
      g = jax.random.normal(jax.random.key(self.seed), (n, k), jnp.float32)
      return np.asarray(g / jnp.linalg.norm(g, axis=0, keepdims=True))

  def _normalize_columns(self, r: Array) -> Array:
    """R / column_norms(R); zero columns restart from the Gaussian start."""
    norms = jnp.linalg.norm(r, axis=0, keepdims=True)
    start = self._start(*r.shape)
    return jnp.where(norms > 0, r / jnp.where(norms > 0, norms, 1), start)

  def init(self, shape, dtype=jnp.float32) -> Stored:
    """P = 0 and residual = 0 (so M = 0), R = the Gaussian start."""
    return self._initial(self.residual.init(shape), shape, dtype,
                         jax.lax.optimization_barrier(jnp.float32(0)))

  def init_like(self, like: Array) -> Stored:
    """:meth:`init` for a parameter ``like``, placed like it (see
    :meth:`Format.init_like`)."""
    # A zero computed from ``like``: encoded from constants alone, P and R
    # would be constant-folded by XLA, element by element (seconds for
    # large parameters; an optimization barrier does not stop XLA's CPU
    # compiler).
    zero = jnp.min(placement.zeros_like(like))
    stored = self._initial(self.residual.init_like(like), like.shape,
                           jnp.float32, zero)
    sharding = placement.known_sharding(like)
    return stored if sharding is None else placement.constrain(stored,
                                                               sharding)

  def _initial(self, residual: Stored, shape: tuple[int, ...],
               dtype, zero: Array) -> Stored:
    """The initial value around a stored zero ``residual``; ``zero`` (a
    float32 +0 scalar) is added to P's zeros and R's start so that they
    are not constants of the program."""
    m, n = layout.matrix_shape(shape)
    k = self.rank_for(shape)
    parts = {
        "P": self.factors.encode(jnp.zeros((m, k), jnp.float32) + zero,
                                 key=jax.random.key(0)),
        "R": self.factors.encode(self._start(n, k) + zero,
                                 key=jax.random.key(self.seed)),
        "residual": residual,
    }
    return Stored(parts, self, shape, dtype)

  def decode_factors(self, stored: Stored) -> tuple[Array, Array]:
    """``(P, R)`` of a stored value, float32.

    Where the factors' format decodes rows apart (:func:`decodes_rows_apart`)
    this is one decode of the two stacked, the shorter one's parts
    zero-padded: one program for both instead of two, bit for bit the same
    values (tested). Factors on Explicit mesh axes are decoded apart.
    """
    p, r = stored["P"], stored["R"]
    # Factors on Explicit mesh axes have their own placements (P like the
    # rows, R like the columns), which a stack cannot hold.
    if not decodes_rows_apart(self.factors) or any(
        placement.explicit_sharding(x) is not None
        for x in jax.tree.leaves((p, r))):
      return p.decode(), r.decode()
    (m, k), n = p.shape, r.shape[0]
    full = _stored_shapes(self.factors, max(m, n), k)
    stacked = [jnp.stack(pair) for pair in zip(
        _padded(p, full), _padded(r, full), strict=True)]
    both = jax.vmap(self.factors.decode)(
        jax.tree.unflatten(jax.tree.structure(full), stacked))
    return both[0, :m], both[1, :n]

  def factorize(self, mat: Array, previous: Stored | None = None
                ) -> tuple[Array, Array]:
    """The warm-started power iteration on an ``(m, n)`` float32 matrix.

    Args:
      mat: the momentum as a matrix.
      previous: the stored value whose R starts the iteration; None starts
        from the fixed Gaussian.

    Returns:
      ``(P, R)``: P (m x k) with orthonormal columns (see
      :func:`orthonormalize`) and R = mat.T @ P.
    """
    if previous is None:
      q = self._start(mat.shape[1], self.rank_for(mat.shape))
    else:
      q = self._normalize_columns(self.decode_factors(previous)[1])
    for _ in range(self.power_iters):
      p = orthonormalize(mat @ q)
      r = mat.T @ p
      q = self._normalize_columns(r)
    return p, r

  def _encode(self, x, *, key, previous) -> Stored:
    m, n = layout.matrix_shape(x.shape)
    self.rank_for(x.shape)  # raises for a rank the shape cannot hold
    mat = x.reshape(m, n).astype(jnp.float32)
    p, r = self.factorize(mat, previous)
    residual = add_low_rank(mat, p, r, subtract=True).reshape(x.shape)
    keys = [None] * 3 if key is None else list(jax.random.split(key, 3))
    parts = {
        "P": self.factors.encode(p, key=keys[0]),
        "R": self.factors.encode(r, key=keys[1]),
        "residual": self.residual.encode(residual, key=keys[2]),
    }
    return Stored(parts, self, x.shape, x.dtype)

  def kernel_layout(self, shape) -> Factored | None:
    """The residual's kernel layout, around factors left to XLA; None
    when the residual has no kernel."""
    inner = self.residual.kernel_layout(shape)
    return None if inner is None else Factored(inner)

  def kernel_parts(self, stored: Stored
                   ) -> tuple[Stored, tuple[Array, Array]]:
    """``(stored residual, (P, R))`` of a stored value, for the kernels;
    the factors decoded to float32."""
    return stored["residual"], self.decode_factors(stored)

  def residual_key(self, key: Array | None) -> Array | None:
    """The key :meth:`encode` encodes the residual with."""
    return None if key is None else jax.random.split(key, 3)[2]

  def kernel_assemble(self, residual: Stored, factors: tuple[Array, Array],
                      shape: tuple[int, ...], key: Array | None) -> Stored:
    """The stored value of a kernel's residual and XLA's new factors.

    Args:
      residual: the encoded residual (keyed by :meth:`residual_key`).
      factors: ``(P, R)`` from :meth:`factorize`, float32.
      shape: the array's shape.
      key: the step's key, split as :meth:`encode` splits it.

    Returns:
      The ``Stored`` value, float32.
    """
    p, r = factors
    keys = [None] * 2 if key is None else list(jax.random.split(key, 3))
    parts = {
        "P": self.factors.encode(p, key=keys[0]),
        "R": self.factors.encode(r, key=keys[1]),
        "residual": residual,
    }
    return Stored(parts, self, shape, jnp.float32)

  def _decode(self, stored: Stored) -> Array:
    m, n = layout.matrix_shape(stored.shape)
    residual = stored["residual"].decode().reshape(m, n)
    return add_low_rank(residual, *self.decode_factors(stored)).reshape(
        stored.shape)


def stored_bytes(fmt: Format, rows: int, cols: int) -> int:
  """Bytes of ``fmt``'s stored value of a ``(rows, cols)`` matrix, from
  shapes alone."""
  return memory.nbytes(_stored_shapes(fmt, rows, cols))


@dataclasses.dataclass(frozen=True)
class BudgetSubspace(Subspace):
  """``Subspace`` whose rank spends the bytes a budget leaves.

  The residual's bytes are fixed by the shape; the factors' grow with k.
  So a byte budget per element, met on square matrices by k = min(m, n) /
  ``rank_divisor``, leaves bytes unspent on rectangular ones (a 512 x 2048
  matrix at k = 25 holds 0.58 bytes an element where a 512 x 512 one
  holds 0.62). Here k is the largest rank whose stored value (factors and
  residual) fits in ``bytes_per_element`` bytes per element of the matrix,
  and at least ``rank`` (or ``min(m, n) // rank_divisor``): the budget
  only adds rank. A distinct class, so that ``Subspace``'s fields, and the
  tags of values stored in it, are unchanged.

  Args:
    rank, rank_divisor, power_iters, factors, residual, seed: as
      :class:`Subspace`; ``rank`` or ``rank_divisor`` gives the least k.
    bytes_per_element: the budget, in bytes per element of the matrix.
  """

  bytes_per_element: float = 0.62

  def __post_init__(self):
    super().__post_init__()
    if not (isinstance(self.bytes_per_element, int | float)
            and self.bytes_per_element > 0):
      raise ValueError(
          f"BudgetSubspace: bytes_per_element must be a positive number, "
          f"got {self.bytes_per_element!r}.")

  def rank_for(self, shape: tuple[int, ...]) -> int:
    """k for an array of ``shape``: the largest within the budget, at least
    :meth:`Subspace.rank_for`'s."""
    least = super().rank_for(shape)
    m, n = layout.matrix_shape(shape)
    budget = self.bytes_per_element * m * n - stored_bytes(self.residual, m,
                                                           n)

    def fits(k: int) -> bool:
      return (stored_bytes(self.factors, m, k)
              + stored_bytes(self.factors, n, k)) <= budget

    lo, hi = least, min(m, n)  # the largest k in [lo, hi] that fits, or lo
    while lo < hi:
      mid = (lo + hi + 1) // 2
      lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo
