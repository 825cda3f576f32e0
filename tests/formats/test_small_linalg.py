"""small_linalg: Cholesky factor and triangular inverse, per platform."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quantmuon.formats import small_linalg, subspace

BRANCHES = {
    "cpu_loops": (small_linalg.cholesky_by_columns,
                  small_linalg.lower_inverse_by_rows),
    "library": (small_linalg._cholesky_library,
                small_linalg._lower_inverse_library),
}


def _gram(k: int, seed: int = 0) -> np.ndarray:
  a = np.random.default_rng(seed).standard_normal((3 * k, k))
  return (a.T @ a).astype(np.float32)


@pytest.mark.parametrize("branch", sorted(BRANCHES))
@pytest.mark.parametrize("k", [1, 7, 64])
def test_matches_float64_numpy(branch, k):
  """Reference: numpy's float64 Cholesky factor and inverse."""
  chol, inverse = (jax.jit(f) for f in BRANCHES[branch])
  gram = _gram(k, seed=k)
  want = np.linalg.cholesky(gram.astype(np.float64))
  got = np.asarray(chol(gram), np.float64)
  np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max())
  assert np.all(np.triu(got, 1) == 0)
  inv = np.asarray(inverse(want.astype(np.float32)), np.float64)
  want_inv = np.linalg.inv(want)
  np.testing.assert_allclose(inv, want_inv,
                             atol=2e-5 * np.abs(want_inv).max())
  assert np.all(np.triu(inv, 1) == 0)


@pytest.mark.parametrize("branch", sorted(BRANCHES))
def test_breakdown_is_not_finite(branch):
  """An indefinite matrix gives a factor that is not all finite, the
  signal orthonormalize's fallback reads."""
  chol, _ = BRANCHES[branch]
  indefinite = jnp.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  assert not np.all(np.isfinite(jax.jit(chol)(indefinite)))


def test_public_functions_symmetrize_and_pick_the_cpu_loops():
  """On this CPU the public functions are the loops, on the mean of ``a``
  and its transpose (as jnp.linalg.cholesky reads it)."""
  gram = _gram(9)
  skewed = gram + np.triu(np.full_like(gram, 1e-3), 1)
  sym = (skewed + skewed.T) / 2
  np.testing.assert_array_equal(
      jax.jit(small_linalg.cholesky)(skewed),
      jax.jit(small_linalg.cholesky_by_columns)(sym))
  lower = np.linalg.cholesky(gram.astype(np.float64)).astype(np.float32)
  np.testing.assert_array_equal(
      jax.jit(small_linalg.lower_inverse)(lower),
      jax.jit(small_linalg.lower_inverse_by_rows)(lower))


def test_cpu_program_calls_no_lapack():
  """LAPACK on the CPU is SciPy's OpenBLAS, whose spinning threads halved
  the speed of the matrix products around it: the compiled CPU program of
  orthonormalize has no custom call (it had potrf and getrf)."""
  hlo = jax.jit(subspace.orthonormalize).lower(
      jax.ShapeDtypeStruct((64, 8), jnp.float32)).compile().as_text()
  assert "custom_call_target" not in hlo


def _exported_ops(platforms: list[str]) -> str:
  return jax.export.export(jax.jit(subspace.orthonormalize),
                           platforms=platforms)(
      jax.ShapeDtypeStruct((64, 8), jnp.float32)).mlir_module()


def test_exports_each_platforms_factorization():
  """A program exported for TPU carries XLA's factorization, one for GPU
  cuSOLVER's, both the triangular solve; one for the CPU only the loops."""
  factorization = {"tpu": "stablehlo.cholesky", "cuda": "cusolver_potrf"}
  for platform, op in factorization.items():
    text = _exported_ops([platform])
    assert op in text and "stablehlo.triangular_solve" in text, platform
  both = _exported_ops(["cpu", "tpu", "cuda"])
  assert all(op in both for op in factorization.values())
  cpu = _exported_ops(["cpu"])
  assert not any(op in cpu for op in factorization.values())
  assert "stablehlo.triangular_solve" not in cpu
  assert "stablehlo.while" in cpu


def test_one_by_one_factor_is_the_square_root():
  """Rank-one Subspace factors (k = 1, small matrices) factor a 1 x 1
  Gram matrix: sqrt(a) exactly, as LAPACK gives it (a / sqrt(a) is off by
  an ulp for some a, and flipped a code of a stacked leaf's momentum
  against its separate twin in a 20-step run)."""
  values = np.random.default_rng(0).uniform(0.1, 10, 2000).astype(
      np.float32)
  got = jax.jit(jax.vmap(small_linalg.cholesky_by_columns))(
      values[:, None, None])[:, 0, 0]
  np.testing.assert_array_equal(got, np.sqrt(values))
