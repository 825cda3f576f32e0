"""quantmuon: Muon with 8-bit, 4-bit and lower optimizer state, in Optax.

The presets (:mod:`quantmuon.presets`) are full optimizers: Muon for the
matrices, AdamW for the rest, the momentum stored in few bits. The pieces
they are built from are in :mod:`quantmuon.transforms` (optax
transforms), :mod:`quantmuon.formats` (storage formats),
:mod:`quantmuon.sharding` (placement on a mesh) and :mod:`quantmuon.fp`
(floating-point-quantized training).
"""

from quantmuon import formats, fp, sharding, transforms
from quantmuon.memory import nbytes
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
from quantmuon.transforms import quantize_state

__version__ = "0.2.0"

__all__ = [
    "formats",
    "fp",
    "full_precision_twin",
    "muon",
    "muon_4bit",
    "muon_8bit",
    "muon_grasp",
    "muon_labels",
    "muon_lowbit",
    "muonq",
    "nbytes",
    "quantize_state",
    "quantized_muon",
    "sharding",
    "transforms",
]
