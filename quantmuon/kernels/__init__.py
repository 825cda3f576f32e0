"""Pallas kernels of the fused momentum step, held to its reference.

Muon's optimizer step is memory-bound: per matrix it reads the stored codes,
scales and the gradient, and writes new codes, scales and the fresh
momentum. The XLA path (:func:`quantmuon.momentum_op.reference`: decode,
accumulate, encode, emit as separate ops) makes several passes over memory;
a fused kernel makes one.

- :mod:`~quantmuon.kernels.geometry`: a format's own kernel layout
  (``Format.kernel_layout``) checked against the kernels' limits;
- :mod:`~quantmuon.kernels.body`: the tile body both backends run, and the
  I/O protocol (``TileIO``) each backend implements;
- :mod:`~quantmuon.kernels.gpu` (Triton) and :mod:`~quantmuon.kernels.tpu`
  (Mosaic): the backends, their tilings, views and block specs;
- :mod:`~quantmuon.kernels.absmax`: the launches of a step (a stats pass
  first for scales that span tiles); codes bit-identical to the reference
  in interpret mode;
- :mod:`~quantmuon.kernels.subspace`: the residual path of ``Subspace``;
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
