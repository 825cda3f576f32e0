"""Cholesky factor and triangular inverse of small (k x k) matrices.

The Subspace formats factor a k x k Gram matrix at every step
(:func:`quantmuon.formats.subspace.orthonormalize`). On TPU and GPU that is
XLA's (or cuSOLVER's) own factorization. On the CPU, ``jnp.linalg`` calls
LAPACK, which jaxlib takes from SciPy's OpenBLAS; OpenBLAS's worker
threads then spin, waiting for more work, on the cores XLA's thread pool
needs, and the large matrix products that follow run on fewer threads.
Measured on a 2-core CPU: one MuonQ momentum step and Newton-Schulz of a
512 x 2048 matrix took 103-112 ms with LAPACK against 76 ms with
``OPENBLAS_NUM_THREADS=1`` (the step alone 8-13 ms, Newton-Schulz 66-82).
So on the CPU both functions here are loops of plain XLA operations (the
factor by columns, the inverse by rows), which call no library;
elsewhere they are ``jax.lax.linalg``'s. The choice is made when the
program is lowered (``jax.lax.platform_dependent``), so an export for
several platforms carries each platform's function.

The loops are the textbook algorithms (Golub and Van Loan, Matrix
Computations, 4th ed., algorithms 4.2.1 and 3.1.1): k steps of a k-vector
update, float32 rounding comparable to LAPACK's (tested against float64
numpy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def cholesky(a: Array) -> Array:
  """The lower Cholesky factor of a symmetric positive definite ``a``.

  Args:
    a: float matrix (k x k), symmetric up to rounding: the mean of ``a``
      and its transpose is factored, as ``jnp.linalg.cholesky`` does.

  Returns:
    L, lower triangular with ``L @ L.T == a``. Where the factorization
    breaks down (``a`` not positive definite in floating point), the
    entries from the failing column on are NaN, as LAPACK reports it
    through jax (``jnp.all(jnp.isfinite(L))`` is then false).
  """
  a = (a + a.T) / 2
  return jax.lax.platform_dependent(a, cpu=cholesky_by_columns,
                                    default=_cholesky_library)


def lower_inverse(lower: Array) -> Array:
  """The inverse of a lower triangular matrix.

  Args:
    lower: float matrix (k x k), lower triangular with a nonzero diagonal.

  Returns:
    Its inverse, lower triangular.
  """
  return jax.lax.platform_dependent(lower, cpu=lower_inverse_by_rows,
                                    default=_lower_inverse_library)


def cholesky_by_columns(a: Array) -> Array:
  """:func:`cholesky` as a loop over columns: with ``c = a[:, j] - L @
  L[j]`` (the columns from j on still zero), ``L[j, j] = sqrt(c[j])`` and
  ``L[i, j] = c[i] / L[j, j]`` below it, as LAPACK computes them (for
  k = 1 the factor is ``sqrt(a)`` exactly)."""
  rows = jnp.arange(a.shape[0])

  def column(j: Array, lower: Array) -> Array:
    col = a[:, j] - lower @ lower[j]
    diagonal = jnp.sqrt(col[j])
    return lower.at[:, j].set(jnp.where(
        rows > j, col / diagonal, jnp.where(rows == j, diagonal, 0)))

  return jax.lax.fori_loop(0, a.shape[0], column, jnp.zeros_like(a))


def lower_inverse_by_rows(lower: Array) -> Array:
  """:func:`lower_inverse` as forward substitution: row i of the inverse
  is ``(e_i - lower[i] @ X) / lower[i, i]`` (rows from i on still zero)."""
  eye = jnp.eye(lower.shape[0], dtype=lower.dtype)

  def row(i: Array, inverse: Array) -> Array:
    return inverse.at[i].set((eye[i] - lower[i] @ inverse) / lower[i, i])

  return jax.lax.fori_loop(0, lower.shape[0], row, jnp.zeros_like(lower))


def _cholesky_library(a: Array) -> Array:
  return jax.lax.linalg.cholesky(a, symmetrize_input=False)


def _lower_inverse_library(lower: Array) -> Array:
  eye = jnp.eye(lower.shape[0], dtype=lower.dtype)
  return jax.lax.linalg.triangular_solve(lower, eye, left_side=True,
                                         lower=True)
