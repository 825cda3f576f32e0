"""quantmuon: Muon with 8-bit, 4-bit and lower optimizer state, in Optax."""

from quantmuon import formats
from quantmuon.memory import memory_report, nbytes

__all__ = ["formats", "memory_report", "nbytes"]
