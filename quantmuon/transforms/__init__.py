"""Optax transforms: the pieces Muon is chained from."""

from quantmuon.transforms.fp import (
    FloatingPointState,
    log_mantissa_schedule,
    quantize_gradients,
    snap_params,
)
from quantmuon.transforms.leafwise import leafwise_muon
from quantmuon.transforms.momentum import (
    QuantizedMomentumState,
    scale_by_quantized_momentum,
)
from quantmuon.transforms.newton_schulz import orthogonalize
from quantmuon.transforms.options import (
    MomentumOptions,
    OrthogonalizeOptions,
    ScaleOptions,
    ViewOptions,
)
from quantmuon.transforms.quantize_state import (
    QuantizedState,
    StoredLeaf,
    quantize_state,
)
from quantmuon.transforms.scale import scale_by_shape

__all__ = [
    "FloatingPointState",
    "MomentumOptions",
    "OrthogonalizeOptions",
    "QuantizedMomentumState",
    "QuantizedState",
    "ScaleOptions",
    "StoredLeaf",
    "ViewOptions",
    "leafwise_muon",
    "log_mantissa_schedule",
    "orthogonalize",
    "quantize_gradients",
    "quantize_state",
    "scale_by_quantized_momentum",
    "scale_by_shape",
    "snap_params",
]
