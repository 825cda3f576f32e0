"""Optax transforms: the pieces Muon is chained from."""

from quantmuon.transforms.momentum import (
    QuantizedMomentumState,
    scale_by_quantized_momentum,
)
from quantmuon.transforms.newton_schulz import orthogonalize
from quantmuon.transforms.scale import scale_by_shape

__all__ = [
    "QuantizedMomentumState",
    "orthogonalize",
    "scale_by_quantized_momentum",
    "scale_by_shape",
]
