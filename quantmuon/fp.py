"""Floating-point-quantized training ("A Convergence Analysis of Adaptive
Optimizers under Floating-point Quantization", arXiv 2510.21314).

Simulated E/M floating point on the gradients (:func:`quantize_gradients`,
the paper's q_G), the weights (:func:`snap_params`, q_W) and the
optimizer's states (:func:`quantmuon.quantize_state` with
``formats.FloatingPoint``, q_M and q_V), with a mantissa width that grows
with the step count (:func:`log_mantissa_schedule`, M = O(log T)).
"""

from quantmuon.transforms.fp import (
    FloatingPointState,
    log_mantissa_schedule,
    quantize_gradients,
    snap_params,
)

__all__ = [
    "FloatingPointState",
    "log_mantissa_schedule",
    "quantize_gradients",
    "snap_params",
]
