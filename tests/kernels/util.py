"""Helpers of the kernel tests: one jitted step per implementation, and the
comparison the kernels are held to (codes bit-exact, the rest within 1e-6
relative)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from quantmuon import formats, momentum_op
from quantmuon.kernels import absmax, dispatch

BETA = 0.9
RTOL = 1e-6


@functools.cache
def stepper(cfg: momentum_op.Config, impl: str) -> Callable[..., Any]:
  """Jitted ``(stored, g, count, key) -> (fresh, stored)``.

  ``impl`` is ``xla`` (the reference), or ``gpu`` / ``tpu``: that driver's
  kernel in interpret mode.
  """
  def run(stored, g, count, key):
    if impl == "xla":
      return momentum_op.reference(stored, g, beta=BETA, cfg=cfg,
                                   count=count, key=key)
    scalars = absmax.scalars(stored, g, beta=BETA, cfg=cfg, count=count)
    fused = dispatch.family(stored.format, stored.shape)
    return fused(stored, g, cfg=cfg, step_scalars=scalars, key=key,
                 backend=impl, interpret=True)
  return jax.jit(run)


def random_state(fmt: formats.Format, shape: tuple[int, ...],
                 rng: np.random.Generator) -> formats.Stored:
  """A stored momentum with nonzero codes (a previous step's)."""
  m = rng.standard_normal(shape).astype(np.float32)
  return jax.jit(lambda x: fmt.encode(x, key=jax.random.key(7)))(m)


def assert_close(ref: Any, out: Any, what: str, rounded: bool = False,
                 rtol: float = RTOL) -> None:
  """Within ``rtol`` of the largest magnitude, exactly for integers.

  With ``rounded``, a 16-bit result is the float32 one rounded: agreement
  to 1e-6 before rounding can still flip the rounding, by one unit.
  """
  ref, out = np.asarray(ref), np.asarray(out)
  assert ref.shape == out.shape and ref.dtype == out.dtype, what
  if not np.issubdtype(ref.dtype, np.floating) and ref.dtype != jnp.bfloat16:
    bad = np.flatnonzero(ref != out)
    assert bad.size == 0, f"{what}: {bad.size} codes differ, first {bad[:5]}"
    return
  tol = max(rtol, float(jnp.finfo(ref.dtype).eps)) if rounded else rtol
  ref, out = ref.astype(np.float32), out.astype(np.float32)
  scale = float(np.max(np.abs(ref))) if ref.size else 0.0
  np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * scale,
                             err_msg=what)


def assert_same_state(ref: Any, out: Any) -> None:
  """Same pytree; codes bit-exact, scales and factors within ``RTOL``."""
  ref_leaves = jax.tree_util.tree_flatten_with_path(ref)[0]
  out_leaves, out_def = jax.tree_util.tree_flatten(out)
  assert jax.tree.structure(ref) == out_def
  for (path, a), b in zip(ref_leaves, out_leaves, strict=True):
    assert_close(a, b, jax.tree_util.keystr(path))
