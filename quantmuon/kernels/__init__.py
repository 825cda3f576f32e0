"""Pallas kernels for the fused momentum update, beside their references.

Muon's optimizer step is memory-bound: per matrix it reads the stored codes,
scales and the gradient, and writes new codes, scales and the fresh
momentum. The XLA path (decode, accumulate, encode, emit as separate ops)
makes several passes over memory; a fused kernel makes one.

- :mod:`~quantmuon.kernels.absmax`: Blockwise, Axiswise and Grid kernels,
  held to :func:`quantmuon.momentum_op.reference`, the XLA path (codes
  bit-identical in interpret mode);
- :mod:`~quantmuon.kernels.subspace`: the residual path of ``Subspace``;
- :mod:`~quantmuon.kernels.gpu` (Triton) and :mod:`~quantmuon.kernels.tpu`
  (Mosaic): the drivers that lay tiles out per backend;
- :mod:`~quantmuon.kernels.dispatch`: ``impl="auto" | "xla" | "pallas" |
  "pallas_interpret"``.
"""

from quantmuon.kernels.dispatch import (
    IMPLS,
    export_disabled_checks,
    has_kernel_family,
    momentum_step,
    unsupported_reason,
)
from quantmuon.kernels.gpu import TRITON_CALL

__all__ = [
    "IMPLS",
    "TRITON_CALL",
    "export_disabled_checks",
    "momentum_step",
    "has_kernel_family",
    "unsupported_reason",
]
