"""The fused path of ``Subspace``: its residual, around the power iteration.

``Subspace`` stores the momentum as ``P @ R.T + residual``. A step is:

1. kernel: decode the residual, add ``P_old @ R_old.T``, accumulate the
   gradient (and normalize), emit the fresh momentum; keep the float32
   momentum M (the power iteration needs all of it);
2. XLA: the warm-started power iteration ``P, R = factorize(M)``;
3. kernel: encode ``M - P @ R.T`` in the residual's format without writing
   the residual (a stats pass first when its scale spans the tensor, as
   MuonQ's per-tensor residual scale does).

The products ``P @ R.T`` stay XLA matrix products (cuBLAS, the MXU), fed to
the kernels as operands. XLA's float32 dot gives results that depend on the
operand shapes (measured on CPU: a 64 x 64 tile of ``P @ R.T`` differs from
the same block of the whole product in the last bit for k = 12), so a
product recomputed tile by tile inside the kernel could not match the
reference bit for bit. The factors P, R (k = min(m, n) / 16 columns) are
encoded by XLA: they are a sixteenth of the data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from quantmuon import formats
from quantmuon.kernels import absmax, geometry

Array = jax.Array


def check(fmt: formats.Subspace, shape: tuple[int, ...]) -> None:
  """Raises ``geometry.Unsupported`` unless the residual has a kernel."""
  geometry.of(fmt.residual, shape)


def step(stored: formats.Stored, g: Array, *, cfg: absmax.Config,
         step_scalars: Array, key: Array | None, backend: str,
         interpret: bool) -> tuple[Array, formats.Stored]:
  """The fused momentum step of a ``Subspace`` leaf.

  Args:
    stored: the stored momentum (a ``Subspace`` value).
    g: the gradient.
    cfg: accumulation, normalization and Nesterov.
    step_scalars: from :func:`absmax.scalars` (its norm pass decodes the
      whole ``Subspace`` value, as the reference does).
    key: key for stochastic rounding, or None.
    backend: ``gpu`` or ``tpu``.
    interpret: run the kernels in interpret mode.

  Returns:
    ``(fresh momentum in g's dtype, new stored momentum)``.
  """
  fmt = stored.format
  low_old = stored["P"].decode() @ stored["R"].decode().T
  new, fresh = absmax.accumulate(
      stored["residual"], g, low_rank=low_old, cfg=cfg,
      step_scalars=step_scalars, backend=backend, interpret=interpret)
  p, r = fmt.factorize(new, stored)
  keys = [None] * 3 if key is None else list(jax.random.split(key, 3))
  residual = absmax.encode(fmt.residual, new, low_rank=p @ r.T,
                           shape=stored.shape, key=keys[2], backend=backend,
                           interpret=interpret)
  parts = {
      "P": fmt.factors.encode(p, key=keys[0]),
      "R": fmt.factors.encode(r, key=keys[1]),
      "residual": residual,
  }
  if fresh is None:
    fresh = new
  fresh = fresh.reshape(g.shape).astype(g.dtype)
  return fresh, formats.Stored(parts, fmt, stored.shape, jnp.float32)
