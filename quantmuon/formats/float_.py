"""``Float``: plain storage in a float dtype, the full-precision reference."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax.numpy as jnp

from quantmuon.formats.base import Format, Stored, canonical_dtype, set_field


@dataclasses.dataclass(frozen=True)
class Float(Format):
  """Stores the array as it is, cast to ``dtype``.

  Args:
    dtype: float32 (exact), bfloat16 or float16.
  """

  holds_empty: ClassVar[bool] = True

  dtype: Any = jnp.float32

  def __post_init__(self):
    dtype = canonical_dtype(self.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(f"dtype must be a float dtype, got {dtype}.")
    set_field(self, "dtype", dtype)

  def _encode(self, x, *, key, previous) -> Stored:
    del key, previous
    return Stored({"values": x.astype(self.dtype)}, self, x.shape, x.dtype)

  def _decode(self, stored: Stored):
    return stored["values"]
