"""The GPU driver: Pallas kernels lowered through Triton.

Why Triton and not Mosaic GPU (the default Pallas GPU lowering in the
installed JAX 0.10.2): checked by exporting for ``platforms=["cuda"]`` on a
CPU machine, Mosaic GPU through ``pl.pallas_call`` (itself deprecated there
in favour of ``plgpu.kernel``) lowers none of what these kernels need:

- no ``log1p``, ``expm1`` or ``floor`` (mu-law codes, stochastic rounding);
- reductions only over all axes ("No support for axes yet"), so no
  per-row or per-column absmax;
- no arithmetic on 8-bit integers (codes);
- TMA copies of at most 256 elements a dimension, of byte counts divisible
  by 128 and row strides of 16 bytes, which a ``(rows, 1)`` scale column or
  a ragged matrix never meets.

Triton lowers all of it, and its pointer-and-mask model suits the layouts
the formats fix: each program computes the offsets of its tile in the
flat arrays and masks what lies outside, so ragged shapes need no padding
and no copy (masked lanes read ``other``, never garbage). Tiles are powers
of two, as Triton requires; a group narrower than its tile is masked. Two
costs of the choice: Triton is not Pallas's default for NVIDIA GPUs any
more, so it is requested explicitly with ``pltriton.CompilerParams``; and
its custom call (``__gpu$xla.gpu.triton``) has no serialization stability
guarantee, so ``jax.export`` of a program holding it needs
``disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(TRITON_CALL)]``.

On a GPU the kernel agrees with the XLA path to rounding, not bit for bit:
Triton divides with ``div.full.f32``, contracts multiply-adds and takes
``log1p`` from libdevice. Bit-exactness is established in interpret mode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from quantmuon.formats import kernel_math, layout
from quantmuon.formats.kernel_layout import (
    KernelLayout,
    RowBlocks,
    RowGroups,
    Spanning,
    TwoSided,
)
from quantmuon.kernels import body
from quantmuon.kernels import codec as codec_lib
from quantmuon.kernels import tile as tile_lib

Array = jax.Array
#: The custom-call target of Triton kernels in a lowered GPU program.
TRITON_CALL = "__gpu$xla.gpu.triton"
# Elements a program works on: enough to hide latency with four warps.
TILE_ELEMENTS = 4096


@dataclasses.dataclass(frozen=True)
class Tiling:
  """The static tiling of one kernel launch.

  Attributes:
    grid: the launch grid.
    rows: tile rows (a power of two).
    cols: tile columns, in elements (a power of two, a multiple of the
      codes a byte holds).
    masked: whether tiles can reach outside the array.
  """

  grid: tuple[int, ...]
  rows: int
  cols: int
  masked: bool


def tiling(geo: KernelLayout) -> Tiling:
  """How ``geo`` is cut into program tiles."""
  m, n, k, t = geo.m, geo.n, geo.per_byte, geo.tiling
  if isinstance(t, RowBlocks):
    cols = max(k, kernel_math.next_pow2(t.width))
    rows = min(kernel_math.next_pow2(m), max(1, TILE_ELEMENTS // cols))
    masked = bool(m % rows or cols != t.width or n % t.width)
    return Tiling((layout.ceil_div(m, rows), t.groups), rows, cols, masked)
  if isinstance(t, RowGroups):
    cols = kernel_math.next_pow2(geo.packed) * k
    rows = kernel_math.next_pow2(t.height)
    masked = bool(rows != t.height or m % t.height or cols != n)
    return Tiling((geo.row_tiles,), rows, cols, masked)
  if isinstance(t, TwoSided):
    side = max(k, kernel_math.next_pow2(t.side))
    masked = bool(side != t.side or m % t.side or n % t.side)
    return Tiling((geo.row_tiles, geo.col_tiles), side, side, masked)
  cols = max(k, min(kernel_math.next_pow2(n), 1024))
  rows = min(kernel_math.next_pow2(m), max(1, TILE_ELEMENTS // cols))
  masked = bool(m % rows or n % cols)
  return Tiling((layout.ceil_div(m, rows), layout.ceil_div(n, cols)), rows,
                cols, masked)


def num_warps(t: Tiling) -> int:
  elements = t.rows * t.cols
  return 4 if elements <= 4096 else 8 if elements <= 8192 else 16


def reduction(geo: KernelLayout) -> str:
  """How a program tile holds its scale groups.

  A ``RowGroups`` group is a whole program tile here ("all"); on the TPU
  it is one row of the view (see ``tpu.MosaicIO``): both are right for
  their layout.
  """
  return {RowBlocks: "row", RowGroups: "all", TwoSided: "grid",
          Spanning: "given"}[type(geo.tiling)]


def _and(*masks: Array | None) -> Array | None:
  out = None
  for mask in masks:
    if mask is not None:
      out = mask if out is None else out & mask
  return out


def load(ref: Any, offsets: Array, mask: Array | None, other: Any = 0):
  """A (masked) gather of ``ref`` at ``offsets``."""
  if mask is None:
    return ref[offsets]
  return pltriton.load(ref.at[offsets], mask=mask, other=other)


def store(ref: Any, offsets: Array, value: Array, mask: Array | None):
  """A (masked) scatter of ``value`` into ``ref`` at ``offsets``."""
  if mask is None:
    ref[offsets] = value
  else:
    pltriton.store(ref.at[offsets], value, mask=mask)


def unpack(codec: KernelLayout, packed: Array) -> Array:
  """(R, C / k) bytes -> (R, C) int32 codes, first code in the low bits."""
  b = packed.astype(jnp.int32)
  k = codec.per_byte
  if k == 1:
    return b
  mask = 2 ** codec.bits - 1
  parts = [(b >> (codec.bits * s)) & mask for s in range(k)]
  rows, cols = b.shape
  # Triton joins two tensors at a time: interleave halves, then pairs.
  while len(parts) > 1:
    half = len(parts) // 2
    parts = [jnp.stack([parts[s], parts[s + half]], axis=-1)
             for s in range(half)]
  return parts[0].reshape(rows, cols * k)


def pack(codec: KernelLayout, codes: Array) -> Array:
  """(R, C) int32 codes -> (R, C / k) uint8 bytes."""
  k = codec.per_byte
  if k == 1:
    return codes.astype(jnp.uint8)
  rows, cols = codes.shape
  parts = jnp.split(codes.reshape(rows, cols // k, k), k, axis=2)
  out = parts[0].reshape(rows, cols // k)
  for s in range(1, k):
    out = out | (parts[s].reshape(rows, cols // k) << (codec.bits * s))
  return out.astype(jnp.uint8)


class TritonIO(body.TileIO):
  """A program's tile in flat arrays: offsets, masks, gathers, scatters.

  Args:
    geo: the kernel layout.
    t: its tiling.
    ins: the input refs by name.
    outs: the output refs by name.
    tables: the codebook's table refs by name.
  """

  def __init__(self, geo: KernelLayout, t: Tiling, ins: dict[str, Any],
               outs: dict[str, Any], tables: dict[str, Any]):
    self.geo, self.ins, self.outs = geo, ins, outs
    self.reduction = reduction(geo)
    self.lookup = codec_lib.GatherLookup(tables)
    self.scalars = ins["scalars"]
    m, n, k, packed, tl = geo.m, geo.n, geo.per_byte, geo.packed, geo.tiling
    lr = jax.lax.broadcasted_iota(jnp.int32, (t.rows, 1), 0)
    lc = jax.lax.broadcasted_iota(jnp.int32, (1, t.cols), 1)
    lb = jax.lax.broadcasted_iota(jnp.int32, (1, t.cols // k), 1)
    i = pl.program_id(0)
    j = pl.program_id(1) if len(t.grid) > 1 else 0
    if isinstance(tl, RowBlocks):
      rows, cols = i * t.rows + lr, j * tl.width + lc
      bcols = j * (tl.width // k) + lb
      row_ok, col_ok = None, lc < tl.width
      byte_ok = lb < layout.ceil_div(tl.width, k)
    elif isinstance(tl, RowGroups):
      rows, cols, bcols = i * tl.height + lr, lc, lb
      row_ok, col_ok, byte_ok = lr < tl.height, None, None
    elif isinstance(tl, TwoSided):
      side = tl.side
      rows, cols = i * side + lr, j * side + lc
      bcols = j * (side // k) + lb
      row_ok, col_ok = lr < side, lc < side
      byte_ok = lb < layout.ceil_div(side, k)
    else:
      rows, cols = i * t.rows + lr, j * t.cols + lc
      bcols = j * (t.cols // k) + lb
      row_ok = col_ok = byte_ok = None
    self.rows, self.cols = rows, cols  # (R, 1) and (1, C) global indices
    self.elements = rows * n + cols    # (R, C) offsets into (m * n)
    self.bytes_ = rows * packed + bcols  # offsets into (m * packed) codes
    if t.masked:
      self.row_mask = _and(row_ok, rows < m)
      self.col_mask = _and(col_ok, cols < n)
      self.mask = self.row_mask & self.col_mask
      self.byte_mask = self.row_mask & _and(byte_ok, bcols < packed)
    else:
      self.row_mask = self.col_mask = self.mask = self.byte_mask = None

  def load(self, name):
    return load(self.ins[name], self.elements, self.mask).astype(jnp.float32)

  def store(self, name, value):
    store(self.outs[name], self.elements, value, self.mask)

  def load_codes(self):
    return unpack(self.geo, load(self.ins["codes"], self.bytes_,
                                       self.byte_mask))

  def store_codes(self, codes):
    if self.mask is not None:
      codes = jnp.where(self.mask, codes, 0)
    store(self.outs["codes"], self.bytes_, pack(self.geo, codes),
          self.byte_mask)

  def _scale_offsets(self) -> tuple[Array, ...]:
    """Offsets of the tile's scales in the flat scale arrays."""
    geo, tl = self.geo, self.geo.tiling
    if isinstance(tl, RowBlocks):
      return (self.rows * tl.groups + pl.program_id(1),)
    if isinstance(tl, TwoSided):
      return (self.rows * geo.col_tiles + pl.program_id(1),
              pl.program_id(0) * geo.n + self.cols)
    return (pl.program_id(0),)

  def _scale_masks(self) -> tuple[Array | None, ...]:
    if isinstance(self.geo.tiling, TwoSided):
      return self.row_mask, self.col_mask
    return (self.row_mask,)

  def load_scale(self):
    refs, tl = self.ins["scales"], self.geo.tiling
    if isinstance(tl, Spanning):
      return self._spanning(refs[0])
    if isinstance(tl, RowGroups):
      return refs[0][pl.program_id(0)].astype(jnp.float32)
    loaded = [load(ref, off, mask).astype(jnp.float32) for ref, off, mask in
              zip(refs, self._scale_offsets(), self._scale_masks(),
                  strict=True)]
    return loaded[0] if len(loaded) == 1 else jnp.minimum(*loaded)

  def given_scale(self):
    if self.geo.tiling.axis == "tensor":
      return self.scalars[tile_lib.SCALE_OUT]
    return self._spanning(self.ins["given"])

  def _spanning(self, ref: Any) -> Array:
    """A spanning scale: the tensor's, a row's or a column's."""
    axis = self.geo.tiling.axis
    if axis == "tensor":
      return ref[0].astype(jnp.float32)
    if axis == "row":
      return load(ref, self.rows, self.row_mask).astype(jnp.float32)
    return load(ref, self.cols, self.col_mask).astype(jnp.float32)

  def store_scales(self, enc):
    refs, tl = self.outs.get("scales"), self.geo.tiling
    if isinstance(tl, Spanning):
      return
    if isinstance(tl, RowGroups):
      refs[0][pl.program_id(0)] = enc.row.reshape(())
      return
    values = (enc.row, enc.col) if isinstance(tl, TwoSided) else (enc.row,)
    for ref, off, mask, value in zip(refs, self._scale_offsets(),
                                     self._scale_masks(), values,
                                     strict=True):
      store(ref, off, value, mask)

  def group_elements(self):
    return self.geo.group_elements(self._scale_offsets()[0])

  def store_stats(self, magnitude):
    geo = self.geo
    if geo.tiling.axis == "row":
      offsets = pl.program_id(1) * geo.m + self.rows
      store(self.outs["stats"], offsets,
            jnp.max(magnitude, axis=1, keepdims=True), self.row_mask)
    else:
      offsets = pl.program_id(0) * geo.n + self.cols
      store(self.outs["stats"], offsets,
            jnp.max(magnitude, axis=0, keepdims=True), self.col_mask)


def stats_shape(geo: KernelLayout, t: Tiling) -> tuple[int, ...]:
  """Flat shape of the partial absmax a stats pass writes."""
  if geo.tiling.axis == "row":
    return (t.grid[1] * geo.m,)
  return (t.grid[0] * geo.n,)


def stats_reduce(geo: KernelLayout, t: Tiling, partial: Array) -> Array:
  """Partial absmax -> the absmax of each spanning scale."""
  if geo.tiling.axis == "row":
    return jnp.max(partial.reshape(t.grid[1], geo.m), axis=0)[:, None]
  cols = jnp.max(partial.reshape(t.grid[0], geo.n), axis=0)[None, :]
  return jnp.max(cols, keepdims=True) if geo.tiling.axis == "tensor" else cols


class Triton(body.Backend):
  """The Triton backend: flat operands, power-of-two masked tiles, tables
  as operands."""

  def __init__(self, geo: KernelLayout):
    self.geo, self.t = geo, tiling(geo)
    self.tables = {name: jnp.asarray(codec_lib.padded_table(table))
                   for name, table in geo.tables().items()}

  def operands(self, ins):
    tensor = isinstance(self.geo.tiling, Spanning) and (
        self.geo.tiling.axis == "tensor")
    out = {name: (tuple(s.reshape(-1) for s in value) if name == "scales"
                  else value.reshape(-1))
           for name, value in ins.items()
           if not (name == "given" and tensor)}
    return {**out, "tables": tuple(self.tables.values())}

  def result_shape(self, name, step):
    geo = self.geo
    if name == "scales":
      return tuple(jax.ShapeDtypeStruct((a * b,), geo.scale_dtype)
                   for a, b in geo.scale_shapes())
    if name == "stats":
      return jax.ShapeDtypeStruct(stats_shape(geo, self.t), jnp.float32)
    if name == "codes":
      return jax.ShapeDtypeStruct((geo.m * geo.packed,), jnp.uint8)
    dtype = step.fresh_dtype if name == "fresh" else jnp.float32
    return jax.ShapeDtypeStruct((geo.m * geo.n,), dtype)

  def call_options(self, in_names, out_names, interpret):
    del in_names, out_names
    return {"grid": self.t.grid,
            "compiler_params": None if interpret else
            pltriton.CompilerParams(num_warps=num_warps(self.t),
                                    num_stages=1)}

  def io(self, ins, outs, interpret):
    del interpret
    refs = dict(zip(self.tables, ins.get("tables", ()), strict=True))
    return TritonIO(self.geo, self.t, ins, outs, refs)

  def natural(self, name, value):
    geo = self.geo
    if name == "scales":
      return tuple(s.reshape(shape) for s, shape in
                   zip(value, geo.scale_shapes(), strict=True))
    if name == "codes":
      return value.reshape(geo.m, geo.packed)
    if name == "stats":
      return stats_reduce(geo, self.t, value)
    return value.reshape(geo.m, geo.n)
