"""quantmuon: Muon with 8-bit, 4-bit and lower optimizer state, in Optax."""

from quantmuon import formats, sharding
from quantmuon.memory import memory_report, nbytes
from quantmuon.presets import (
    full_precision_twin,
    muon,
    muon_4bit,
    muon_8bit,
    muon_grasp,
    muon_lowbit,
    muonq,
    quantized_muon,
)
from quantmuon.routing import muon_labels
from quantmuon.transforms import (
    QuantizedMomentumState,
    leafwise_muon,
    log_mantissa_schedule,
    orthogonalize,
    quantize_gradients,
    quantize_state,
    scale_by_quantized_momentum,
    scale_by_shape,
    snap_params,
)

__all__ = [
    "QuantizedMomentumState",
    "formats",
    "full_precision_twin",
    "leafwise_muon",
    "log_mantissa_schedule",
    "memory_report",
    "muon",
    "muon_4bit",
    "muon_8bit",
    "muon_grasp",
    "muon_lowbit",
    "muon_labels",
    "muonq",
    "nbytes",
    "orthogonalize",
    "quantize_gradients",
    "quantize_state",
    "quantized_muon",
    "scale_by_quantized_momentum",
    "scale_by_shape",
    "sharding",
    "snap_params",
]
