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

from quantmuon import formats, momentum_op
from quantmuon.kernels import absmax

Array = jax.Array


def step(stored: formats.Stored, g: Array, *, cfg: momentum_op.Config,
         step_scalars: Array, key: Array | None, backend: str,
         interpret: bool) -> tuple[Array, formats.Stored]:
  """The fused momentum step of a format with a ``Factored`` layout.

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
  residual, (p_old, r_old) = fmt.kernel_parts(stored)
  new, fresh = absmax.accumulate(
      residual, g, low_rank=p_old @ r_old.T, cfg=cfg,
      step_scalars=step_scalars, backend=backend, interpret=interpret)
  p, r = fmt.factorize(new, stored)
  residual = absmax.encode(residual.format, new, low_rank=p @ r.T,
                           shape=stored.shape, key=fmt.residual_key(key),
                           backend=backend, interpret=interpret)
  if fresh is None:
    fresh = new
  fresh = fresh.reshape(g.shape).astype(g.dtype)
  return fresh, fmt.kernel_assemble(residual, (p, r), stored.shape, key)
