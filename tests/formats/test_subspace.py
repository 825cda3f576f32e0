"""Subspace: top-k factors from a warm-started power iteration, plus a
residual."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quantmuon import memory
from quantmuon.formats import (
  Axiswise,
  Blockwise,
  BudgetSubspace,
  Float,
  Grid,
  Subspace,
  small_linalg,
  subspace,
)
from quantmuon.formats.subspace import add_low_rank, row_blocks

from . import util


@functools.cache
def warm_encoder(fmt: Subspace):
  return jax.jit(lambda x, previous: fmt.encode(x, previous=previous))


def low_rank_plus_noise(m: int, n: int, singular_values: list[float],
                        sigma: float, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  k = len(singular_values)
  u, _ = np.linalg.qr(rng.standard_normal((m, k)))
  v, _ = np.linalg.qr(rng.standard_normal((n, k)))
  x = (u * np.asarray(singular_values)) @ v.T
  return (x + sigma * rng.standard_normal((m, n))).astype(np.float32)


def largest_principal_angle(a: np.ndarray, b: np.ndarray) -> float:
  """Largest principal angle, in degrees, between the column spans."""
  qa, _ = np.linalg.qr(np.asarray(a, np.float64))
  qb, _ = np.linalg.qr(np.asarray(b, np.float64))
  cosines = np.linalg.svd(qa.T @ qb, compute_uv=False)
  return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


@pytest.mark.parametrize("shape", [(6, 10), (10, 6)])
def test_full_rank_leaves_no_residual(shape):
  fmt = Subspace(rank=min(shape), factors=Float(), residual=Float())
  x = util.normal(shape, seed=1)
  stored = util.encode(fmt, x)
  residual = util.decode(stored["residual"])
  assert np.abs(residual).max() < 1e-5 * np.abs(x).max()
  np.testing.assert_allclose(util.decode(stored), x, atol=1e-5)
  p = util.decode(stored["P"])
  np.testing.assert_allclose(p.T @ p, np.eye(min(shape)), atol=1e-5)


def test_rank_deficient_input_still_reconstructs():
  """Rank 1 with k = 8: P is not orthonormal (|P^T P - I| = 0.98), yet
  P R^T + residual is the input."""
  rng = np.random.default_rng(0)
  x = np.outer(rng.standard_normal(64), rng.standard_normal(48))
  x = x.astype(np.float32)
  fmt = Subspace(rank=8, factors=Float(), residual=Float())
  stored = util.encode(fmt, x)
  np.testing.assert_allclose(util.decode(stored), x, rtol=0,
                             atol=1e-6 * np.abs(x).max())


def test_parts_and_rank_divisor():
  fmt = Subspace(rank_divisor=16)  # k = min(64, 40) // 16 = 2
  x = util.normal((4, 16, 40), seed=2)  # matrix view (64, 40)
  stored = util.encode(fmt, x)
  assert fmt.rank_for(x.shape) == 2
  chex.assert_shape(stored["P"].decode(), (64, 2))
  chex.assert_shape(stored["R"].decode(), (40, 2))
  chex.assert_shape(stored["residual"].decode(), x.shape)
  out = util.decode(stored)
  chex.assert_shape(out, x.shape)
  # 8-bit factors and a 4-bit grid residual: a few percent.
  assert util.rel_err(x, out) < 0.1
  assert Subspace(rank_divisor=1000).rank_for((5, 7)) == 1


def test_warm_start_recovers_top_subspace():
  x = low_rank_plus_noise(48, 32, [5.0, 4.0, 3.0, 2.5], sigma=0.1)
  top = np.linalg.svd(x)[0][:, :4]
  fmt = Subspace(rank=4)  # 8-bit factors, 4-bit grid residual
  cold = util.encode(fmt, x)  # one power iteration from the Gaussian start
  cold_angle = largest_principal_angle(top, util.decode(cold["P"]))
  stored = cold
  for _ in range(5):
    stored = warm_encoder(fmt)(x, stored)
  warm_angle = largest_principal_angle(top, util.decode(stored["P"]))
  assert cold_angle > 20.0, cold_angle
  assert warm_angle < 3.0, warm_angle
  # The factors carry the top directions, the residual little but noise.
  s = np.linalg.svd(x, compute_uv=False)
  tail = np.sqrt(np.sum(s[4:] ** 2))
  residual = util.decode(stored["residual"])
  assert np.linalg.norm(residual) < 1.1 * tail


def test_subspace_beats_its_residual_format_on_low_rank_matrices():
  x = low_rank_plus_noise(64, 64, [40.0, 30.0, 20.0, 10.0], sigma=0.1,
                          seed=3)
  fmt = Subspace(rank=4, factors=Blockwise(bits=8, block_size=64),
                 residual=Grid(bits=4, tile=32))
  stored = util.encode(fmt, x)
  for _ in range(3):
    stored = warm_encoder(fmt)(x, stored)
  plain = util.rel_err(x, util.roundtrip(Grid(bits=4, tile=32))(x))
  split = util.rel_err(x, util.decode(stored))
  assert split < 0.5 * plain, (split, plain)


def test_zeros_and_init_decode_to_zero():
  fmt = Subspace(rank=4)  # the shape and format of the warm-start test
  zeros = np.zeros((48, 32), np.float32)
  init = jax.jit(lambda: fmt.init((48, 32)))()
  for stored in (util.encode(fmt, zeros), init,
                 warm_encoder(fmt)(zeros, init)):
    out = util.decode(stored)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, 0.0)


def test_rank_too_large():
  with pytest.raises(ValueError, match="rank"):
    Subspace(rank=7).encode(np.ones((6, 10), np.float32))
  with pytest.raises(ValueError, match="rank"):
    Subspace(rank=7).init((10, 6))
  with pytest.raises(ValueError, match="rank"):
    Subspace(rank=0)
  with pytest.raises(ValueError, match="factors"):
    Subspace(factors="int8")


def _nearly_rank_one(seed: int = 0, noise: float = 1e-4) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((256, 1)) @ rng.standard_normal((1, 12))
          + noise * rng.standard_normal((256, 12))).astype(np.float32)


def test_orthonormalize_survives_a_breakdown_of_the_small_shift():
  """Aligned warm-start columns (after a rank-one first step) made the
  small shift's Cholesky factorization NaN under jit, and a width-256 run
  of muon_lowbit diverge at its third step."""
  a = _nearly_rank_one()

  @jax.jit
  def small_shift_cholesky(a):
    gram = a.T @ a
    return small_linalg.cholesky(
        gram + (1e-6 * jnp.trace(gram) / 12 + jnp.finfo(a.dtype).tiny)
        * jnp.eye(12))

  assert not np.all(np.isfinite(small_shift_cholesky(a)))  # the premise
  q = np.asarray(jax.jit(subspace.orthonormalize)(a))
  assert np.all(np.isfinite(q))
  # The one real direction comes out whole; the columns beyond the rank are
  # rounding noise of norm at most about one (see the docstring).
  u = a[:, 0] / np.linalg.norm(a[:, 0])
  assert abs(abs(q[:, 0] @ u) - 1) < 1e-3
  assert np.all(np.linalg.norm(q, axis=0) < 1.05)
  # A well-conditioned input never takes the safe shift: the result is
  # CholeskyQR2 with the small shift alone, bit for bit.
  b = np.random.default_rng(1).standard_normal((256, 12)).astype(np.float32)

  def small_only(a):
    for _ in range(2):
      a = a @ small_linalg.lower_inverse(small_shift_cholesky(a)).T
    return a

  np.testing.assert_array_equal(jax.jit(subspace.orthonormalize)(b),
                                jax.jit(small_only)(b))
  # Through the breakdown too, it is the two passes written out, each
  # computing both factorizations, bit for bit.
  np.testing.assert_array_equal(q, jax.jit(_written_out)(a))


def _written_out(a):
  """CholeskyQR2 as two passes written out, each computing both
  factorizations."""
  k = a.shape[1]
  safe = 11 * (a.size + k * (k + 1)) * float(jnp.finfo(a.dtype).eps) / 2
  tiny, eye = jnp.finfo(a.dtype).tiny, jnp.eye(k)
  for _ in range(2):
    gram = a.T @ a
    trace = jnp.trace(gram)
    chol = small_linalg.cholesky(gram + (1e-6 * trace / k + tiny) * eye)
    chol = jnp.where(jnp.all(jnp.isfinite(chol)), chol,
                     small_linalg.cholesky(gram + (safe * trace + tiny) * eye))
    a = a @ small_linalg.lower_inverse(chol).T
  return a


def test_orthonormalize_has_the_written_out_gradient():
  """Reverse mode goes through the loops (a while loop had stopped
  ``jax.grad`` of an update through a Subspace preset's chain)."""
  a = np.random.default_rng(2).standard_normal((64, 6)).astype(np.float32)
  w = np.random.default_rng(3).standard_normal((64, 6)).astype(np.float32)

  def grad_of(fn):
    return jax.jit(jax.grad(lambda a: jnp.sum(fn(a) * w)))(a)

  got = grad_of(subspace.orthonormalize)
  assert np.all(np.isfinite(got)) and np.any(got != 0)
  np.testing.assert_allclose(got, grad_of(_written_out), rtol=1e-5,
                             atol=1e-6)


def test_orthonormalize_compiles_one_factorization():
  """Each leaf compiles its own copy: the two passes and the fallback
  share one Cholesky factorization and one inverse in the program (the
  passes written out had four and two), each one function per platform
  (:mod:`quantmuon.formats.small_linalg`)."""
  def count(jaxpr, name):
    found = 0
    for eqn in jaxpr.eqns:
      found += eqn.primitive.name == name
      for param in eqn.params.values():
        for sub in param if isinstance(param, tuple) else (param,):
          if hasattr(sub, "jaxpr"):  # a ClosedJaxpr
            found += count(sub.jaxpr, name)
          elif hasattr(sub, "eqns"):
            found += count(sub, name)
    return found

  jaxpr = jax.make_jaxpr(subspace.orthonormalize)(
      jax.ShapeDtypeStruct((256, 12), jnp.float32)).jaxpr
  assert count(jaxpr, "platform_index") == 2
  assert count(jaxpr, "cholesky") == 1
  assert count(jaxpr, "triangular_solve") == 1


@pytest.mark.parametrize("m, k", [(256, 12), (300, 48), (64, 1)])
def test_orthonormalize_is_householder_q_up_to_signs(m, k):
  """Reference: numpy's float64 Householder QR of a full-rank input."""
  a = util.normal((m, k), seed=k)
  q = np.asarray(jax.jit(subspace.orthonormalize)(a), np.float64)
  ref, _ = np.linalg.qr(a.astype(np.float64))
  signs = np.sign(np.sum(q * ref, axis=0))
  np.testing.assert_allclose(q, ref * signs, atol=2e-5)
  np.testing.assert_allclose(q.T @ q, np.eye(k), atol=2e-5)


@pytest.mark.parametrize("factors", [
    Blockwise(bits=8, block_size=128),
    Blockwise(bits=2, codebook="midrise", clip_rms=1.5, block_size=16,
              scale_dtype=jnp.float16),
    Axiswise(axis="col", bits=4, codebook="mulaw", scale_dtype=jnp.float16,
             companding="before_scale"),
    Grid(bits=4, tile=8),
], ids=["blockwise8", "midrise_rms", "col_mulaw", "grid"])
def test_factors_decoded_stacked_as_apart(factors):
  """P and R decoded as one stacked array equal two decodes bit for bit
  (odd and ragged row counts, P shorter and longer than R)."""
  assert subspace.decodes_rows_apart(factors)

  encode = jax.jit(lambda x, seed: factors.encode(
      x, key=jax.random.key(seed)))

  @jax.jit
  def both_ways(parts):
    fmt = Subspace(rank=parts["P"].shape[1], factors=factors)
    return fmt.decode_factors(parts), (parts["P"].decode(),
                                       parts["R"].decode())

  for m, n, k in [(37, 90, 7), (130, 50, 12)]:
    stacked, apart = both_ways({
        "P": encode(util.normal((m, k), seed=1), 1),
        "R": encode(3 * util.normal((n, k), seed=2), 2)})
    for x, y in zip(stacked, apart, strict=True):
      np.testing.assert_array_equal(x, y)


def test_warm_start_from_aligned_columns_stays_finite():
  fmt = Subspace(rank=12, factors=Float(), residual=Float())
  m = _nearly_rank_one(noise=0.0) @ np.ones((12, 64), np.float32)
  first = fmt.encode(jnp.asarray(m))
  m2 = m + 1e-4 * np.random.default_rng(2).standard_normal(m.shape).astype(
      np.float32)
  second = jax.jit(lambda x, prev: fmt.encode(x, previous=prev))(m2, first)
  np.testing.assert_allclose(np.asarray(second.decode()), m2, atol=1e-4,
                             rtol=1e-4)


@pytest.mark.parametrize("subtract", [False, True])
@pytest.mark.parametrize("m, block_elements, blocks", [
    (40, 5 * 24, 8), (40, 12 * 24, 4), (41, 5 * 24, 1), (40, 10 ** 6, 1)])
def test_add_low_rank_is_the_whole_product(subtract, m, block_elements,
                                           blocks):
  """Strided row blocks (8 of 5 rows, 4 of 10), one block where m is odd or
  small: the plain product in float64, and XLA's unblocked float32 product
  bit for bit."""
  n, k = 24, 3
  assert row_blocks(m, n, block_elements) == blocks
  x, p, r = (util.normal(s, seed=i)
             for i, s in enumerate([(m, n), (m, k), (n, k)]))
  out = jax.jit(lambda x, p, r: add_low_rank(
      x, p, r, subtract=subtract, block_elements=block_elements))(x, p, r)
  sign = -1.0 if subtract else 1.0
  want = x.astype(np.float64) + sign * (p.astype(np.float64) @ r.T)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  whole = jax.jit(lambda x, p, r: x - p @ r.T if subtract
                  else x + p @ r.T)(x, p, r)
  np.testing.assert_array_equal(out, whole)


def test_add_low_rank_temporaries_are_one_block():
  """Compiled with ``x`` donated, the blocked product's temporaries are
  about one block of rows; the unblocked product's, a whole matrix."""
  m, n, k = 1024, 512, 32
  shapes = [jax.ShapeDtypeStruct(s, jnp.float32)
            for s in [(m, n), (m, k), (n, k)]]

  def temporaries(block_elements):
    step = jax.jit(lambda x, p, r: add_low_rank(
        x, p, r, block_elements=block_elements), donate_argnums=(0,))
    analysis = step.lower(*shapes).compile().memory_analysis()
    return analysis.temp_size_in_bytes / (m * n * 4)

  assert temporaries(m * n) > 0.9  # one block: the whole product
  assert temporaries(64 * n) < 0.2  # 16 blocks of 64 rows


LOWBIT_PARTS = dict(
    rank_divisor=20, factors=Blockwise(bits=8, block_size=128),
    residual=Blockwise(bits=4, codebook="mulaw", companding="before_scale",
                       scale_dtype=jnp.float16, block_size=128))


@pytest.mark.parametrize("shape,budget", [
    ((64, 256), 0.62), ((256, 64), 0.7), ((64, 64), 0.62), ((40, 1000), 0.62),
    ((48, 80), 0.01)])
def test_budget_rank_is_the_largest_that_fits(shape, budget):
  fmt = BudgetSubspace(bytes_per_element=budget, **LOWBIT_PARTS)
  least = Subspace(**LOWBIT_PARTS).rank_for(shape)

  def nbytes(k):
    return memory.nbytes(jax.eval_shape(
        lambda k=k: Subspace(rank=k, **LOWBIT_PARTS).init(shape)))

  k = fmt.rank_for(shape)
  limit = budget * shape[0] * shape[1]
  assert k >= least
  assert k == least or nbytes(k) <= limit  # fits
  assert k == min(shape) or nbytes(k + 1) > limit  # the largest that fits
  assert memory.nbytes(jax.eval_shape(lambda: fmt.init(shape))) == nbytes(k)


def test_budget_spends_bytes_left_on_rectangular_matrices():
  fmt = BudgetSubspace(bytes_per_element=0.62, **LOWBIT_PARTS)
  assert fmt.rank_for((512, 512)) == Subspace(**LOWBIT_PARTS).rank_for(
      (512, 512)) == 25
  assert fmt.rank_for((512, 2048)) == 41


def test_budget_subspace_stores_as_subspace_of_its_rank():
  x = low_rank_plus_noise(64, 256, [8.0, 4.0, 2.0, 1.0], 0.1)
  fmt = BudgetSubspace(bytes_per_element=0.7, **LOWBIT_PARTS)
  k = fmt.rank_for(x.shape)
  assert k > Subspace(**LOWBIT_PARTS).rank_for(x.shape)
  plain = Subspace(rank=k, **LOWBIT_PARTS)
  ours, theirs = fmt.encode(x), plain.encode(x)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(fmt.decode(ours), plain.decode(theirs))


@pytest.mark.parametrize("budget", [0, -1.0, "0.6", None])
def test_budget_must_be_positive(budget):
  with pytest.raises(ValueError, match="BudgetSubspace: bytes_per_element"):
    BudgetSubspace(bytes_per_element=budget)
