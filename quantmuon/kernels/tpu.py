"""The TPU driver: Pallas kernels lowered through Mosaic.

Mosaic wants blocks whose last two dimensions are multiples of (8, 128) or
the array's own, and reads garbage past a ragged edge (NaN in interpret
mode). So every operand is laid out, explicitly padded, in a canonical view
whose blocks are whole scale groups:

- ``rows`` and ``group``: one scale group a row, ``(groups, L)`` padded to
  ``(Gp, Lp)`` with ``Lp`` a multiple of ``128 * codes a byte``;
- ``grid``: tile-major ``(tiles, t, t)``, one Grid tile a block (a block
  equal to the array's last two dimensions is always legal);
- ``given``: the matrix itself, padded to whole ``(8k, 128k)`` blocks.

Padding holds the zero code, whose level is exactly 0, and zero gradients,
so it changes no scale; results are cropped back. Packed codes are
(un)packed in the kernel with exact 0/1 matrix products on the MXU (codes
below 256 are exact in bfloat16), since Mosaic has no lane interleave.
When the array is not already in the canonical view, the views are XLA
copies; these kernels are only exported here, not measured, as no TPU was
available.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from quantmuon.formats import kernel_math, layout, packing
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
LANES = 128
BLOCK_BYTES = 512 * 1024  # of one float32 block


def round_up(x: int, multiple: int) -> int:
  return layout.ceil_div(x, multiple) * multiple


@dataclasses.dataclass(frozen=True)
class View:
  """The canonical padded view of one geometry.

  Attributes:
    rows: padded rows of the view (one scale group a row for ``RowBlocks``
      and ``RowGroups``; matrix rows for ``Spanning``) or tiles
      (``TwoSided``).
    cols: padded columns (elements) of a view row or tile row.
    block_rows: rows a block holds.
    block_cols: columns a block holds.
    packed_fast: whether packed codes map to the view without unpacking.
  """

  rows: int
  cols: int
  block_rows: int
  block_cols: int
  packed_fast: bool

  @property
  def grid(self) -> tuple[int, ...]:
    return (self.rows // self.block_rows, self.cols // self.block_cols)


def _block_rows(cols: int) -> int:
  rows = BLOCK_BYTES // (4 * cols)
  return max(8, min(32, rows // 8 * 8))


def _groups(geo: KernelLayout) -> tuple[int, int]:
  """(groups, elements a group) of a row-grouped geometry."""
  t = geo.tiling
  if isinstance(t, RowBlocks):
    return geo.m * t.groups, t.width
  return geo.row_tiles, t.height * geo.n


def view(geo: KernelLayout) -> View:
  """The padded view ``geo``'s kernel runs on."""
  k, t = geo.per_byte, geo.tiling
  lane = LANES * k
  if isinstance(t, RowBlocks | RowGroups):
    groups, length = _groups(geo)
    cols = round_up(length, lane)
    block = _block_rows(cols)
    fast = geo.n % k == 0 and (isinstance(t, RowGroups) or t.width % k == 0)
    return View(round_up(groups, block), cols, block, cols, fast)
  if isinstance(t, TwoSided):
    return View(geo.row_tiles * geo.col_tiles, t.side, 1, t.side,
                geo.n % k == 0 and t.side % k == 0)
  cols = min(round_up(geo.n, lane), 2048)
  block = _block_rows(cols)
  return View(round_up(geo.m, block), round_up(geo.n, cols), block, cols,
              geo.n % k == 0)


def _pad2(x: Array, rows: int, cols: int, fill: Any) -> Array:
  return jnp.pad(x, ((0, rows - x.shape[0]), (0, cols - x.shape[1])),
                 constant_values=fill)


def to_view(geo: KernelLayout, v: View, x: Array, fill: Any = 0,
            k: int = 1) -> Array:
  """A ``(m, n)`` matrix into the view ``v``.

  Args:
    geo: the kernel layout.
    v: its view.
    x: the matrix, of elements (``k = 1``) or of packed bytes (``k`` codes a
      byte, for codes whose groups hold whole bytes).
    fill: the padding value.
    k: elements a column of ``x`` holds.

  Returns:
    The view-shaped array.
  """
  m, t = geo.m, geo.tiling
  if isinstance(t, RowBlocks):
    width = t.width // k
    x = _pad2(x, m, t.groups * width, fill).reshape(m * t.groups, width)
    return _pad2(x, v.rows, v.cols // k, fill)
  if isinstance(t, RowGroups):
    tiles = geo.row_tiles
    x = _pad2(x, tiles * t.height, x.shape[1], fill)
    x = x.reshape(tiles, t.height * x.shape[1])
    return _pad2(x, v.rows, v.cols // k, fill)
  if isinstance(t, TwoSided):
    side, mt, nt = t.side, geo.row_tiles, geo.col_tiles
    x = _pad2(x, mt * side, nt * side // k, fill)
    x = x.reshape(mt, side, nt, side // k).transpose(0, 2, 1, 3)
    return x.reshape(mt * nt, side, side // k)
  return _pad2(x, v.rows, v.cols // k, fill)


def from_view(geo: KernelLayout, x: Array, cols: int, k: int = 1) -> Array:
  """Inverse of :func:`to_view`, to a matrix of ``cols`` columns."""
  m, t = geo.m, geo.tiling
  if isinstance(t, RowBlocks):
    width = t.width // k
    x = x[:m * t.groups, :width].reshape(m, t.groups * width)
    return x[:, :cols]
  if isinstance(t, RowGroups):
    x = x[:geo.row_tiles, :t.height * cols]
    return x.reshape(geo.row_tiles * t.height, cols)[:m]
  if isinstance(t, TwoSided):
    side, mt, nt = t.side, geo.row_tiles, geo.col_tiles
    x = x.reshape(mt, nt, side, side // k).transpose(0, 2, 1, 3)
    return x.reshape(mt * side, nt * side // k)[:m, :cols]
  return x[:m, :cols]


def codes_to_view(geo: KernelLayout, v: View, codes: Array) -> Array:
  """Packed codes ``(m, packed)`` into the view, padded with pad codes."""
  codec = geo
  if v.packed_fast:
    return to_view(geo, v, codes, tile_lib.pad_byte(codec),
                   codec.per_byte)
  unpacked = packing.unpack(codes, codec.bits, geo.n)
  out = to_view(geo, v, unpacked, codec.pad_code)
  return packing.pack(out, codec.bits)


def codes_from_view(geo: KernelLayout, v: View, codes: Array) -> Array:
  """Inverse of :func:`codes_to_view` (pad codes in a byte become 0)."""
  codec = geo
  if v.packed_fast:
    return from_view(geo, codes, geo.packed, codec.per_byte)
  unpacked = packing.unpack(codes, codec.bits, codes.shape[-1] *
                            codec.per_byte)
  return packing.pack(from_view(geo, unpacked, geo.n), codec.bits)


def scales_to_view(geo: KernelLayout, v: View, scales: tuple[Array, ...]
                   ) -> tuple[Array, ...]:
  """Stored scales into the view's blocks."""
  t = geo.tiling
  if isinstance(t, RowBlocks | RowGroups):
    col = scales[0].reshape(-1, 1)
    return (jnp.pad(col, ((0, v.rows - col.shape[0]), (0, 0))),)
  if isinstance(t, TwoSided):
    side, mt, nt = t.side, geo.row_tiles, geo.col_tiles
    row = _pad2(scales[0], mt * side, nt, 0).reshape(mt, side, nt)
    row = row.transpose(0, 2, 1).reshape(mt * nt, side, 1)
    col = _pad2(scales[1], mt, nt * side, 0).reshape(mt * nt, 1, side)
    return row, col
  return (_spanning_to_view(geo, v, scales[0]),)


def scales_from_view(geo: KernelLayout, scales: tuple[Array, ...]
                     ) -> tuple[Array, ...]:
  """Inverse of :func:`scales_to_view` for encoded scales."""
  t = geo.tiling
  if isinstance(t, RowBlocks | RowGroups):
    count = _groups(geo)[0]
    return (scales[0][:count].reshape(geo.scale_shapes()[0]),)
  side, mt, nt = t.side, geo.row_tiles, geo.col_tiles
  row = scales[0].reshape(mt, nt, side).transpose(0, 2, 1)
  row = row.reshape(mt * side, nt)[:geo.m]
  col = scales[1].reshape(mt, nt * side)[:, :geo.n]
  return row, col


def _spanning_to_view(geo: KernelLayout, v: View, scale: Array) -> Array:
  axis = geo.tiling.axis
  if axis == "row":
    return jnp.pad(scale, ((0, v.rows - geo.m), (0, 0)))
  if axis == "col":
    return jnp.pad(scale, ((0, 0), (0, v.cols - geo.n)))
  return scale


def _selection(rows: int, cols: int, k: int, bits: int,
               expand: bool, part: int = 0) -> Array:
  """0/1 (or power of two) matrices that (un)interleave ``k`` codes."""
  i = jax.lax.broadcasted_iota(jnp.int32, (rows, cols), 0)
  j = jax.lax.broadcasted_iota(jnp.int32, (rows, cols), 1)
  if expand:  # byte column i -> code column k * i + part
    return (j == k * i + part).astype(jnp.bfloat16)
  weight = jnp.zeros((rows, cols), jnp.float32)
  for s in range(k):  # code column k * j + s -> byte column j
    weight = jnp.where(i == k * j + s, float(2 ** (bits * s)), weight)
  return weight.astype(jnp.bfloat16)


def unpack(codec: KernelLayout, packed: Array) -> Array:
  """(R, B) bytes -> (R, B * k) int32 codes by exact MXU products."""
  b = packed.astype(jnp.int32)
  k = codec.per_byte
  if k == 1:
    return b
  width = b.shape[1]
  chunk = min(width, LANES)
  mask = 2 ** codec.bits - 1
  pieces = []
  for c in range(width // chunk):
    part = b[:, c * chunk:(c + 1) * chunk]
    out = None
    for s in range(k):
      nib = ((part >> (codec.bits * s)) & mask).astype(jnp.bfloat16)
      prod = jnp.dot(nib, _selection(chunk, chunk * k, k, codec.bits, True,
                                     s), preferred_element_type=jnp.float32)
      out = prod if out is None else out + prod
    pieces.append(out)
  full = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=1)
  return full.astype(jnp.int32)


def pack(codec: KernelLayout, codes: Array) -> Array:
  """(R, C) int32 codes -> (R, C / k) uint8 by exact MXU products."""
  k = codec.per_byte
  if k == 1:
    return codes.astype(jnp.uint8)
  width = codes.shape[1] // k
  chunk = min(width, LANES)
  weights = _selection(chunk * k, chunk, k, codec.bits, False)
  pieces = []
  for c in range(width // chunk):
    part = codes[:, c * chunk * k:(c + 1) * chunk * k].astype(jnp.bfloat16)
    pieces.append(jnp.dot(part, weights, preferred_element_type=jnp.float32))
  full = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=1)
  return full.astype(jnp.int32).astype(jnp.uint8)


def _specs(geo: KernelLayout, v: View) -> dict[str, Any]:
  """Block specs of the view's operands and results by name."""
  k, t = geo.per_byte, geo.tiling
  br, bc = v.block_rows, v.block_cols
  if isinstance(t, TwoSided):
    side = t.side

    def spec(cols):
      return pl.BlockSpec((1, side, cols), lambda i, j: (i, 0, j))

    elem, byte = spec(side), spec(side // k)
    scale = (pl.BlockSpec((1, side, 1), lambda i, j: (i, 0, 0)),
             pl.BlockSpec((1, 1, side), lambda i, j: (i, 0, 0)))
  else:
    elem = pl.BlockSpec((br, bc), lambda i, j: (i, j))
    byte = pl.BlockSpec((br, bc // k), lambda i, j: (i, j))
    if isinstance(t, Spanning):
      scale = {"tensor": (pl.BlockSpec(memory_space=pltpu.SMEM),),
               "row": (pl.BlockSpec((br, 1), lambda i, j: (i, 0)),),
               "col": (pl.BlockSpec((1, bc), lambda i, j: (0, j)),)
               }[t.axis]
    else:
      scale = (pl.BlockSpec((br, 1), lambda i, j: (i, 0)),)
  if isinstance(t, Spanning) and t.axis == "row":
    stats = pl.BlockSpec((1, br, 1), lambda i, j: (j, i, 0))
  else:
    stats = pl.BlockSpec((1, 1, bc), lambda i, j: (i, 0, j))
  return {"codes": byte, "g": elem, "low_rank": elem, "x": elem,
          "noise": elem, "scales": scale, "given": scale[0],
          "scalars": pl.BlockSpec(memory_space=pltpu.SMEM),
          "fresh": elem, "new": elem, "stats": stats}


def _reduce_stats(geo: KernelLayout, stats: Array) -> Array:
  axis = geo.tiling.axis
  if axis == "row":
    return jnp.max(stats, axis=0)[:geo.m]
  cols = jnp.max(stats, axis=(0, 1))[None, :geo.n]
  return jnp.max(cols, keepdims=True) if axis == "tensor" else cols


class MosaicIO(body.TileIO):
  """A block of the padded view: whole refs, no masks, constant tables.

  Every scale group of a ``RowBlocks`` or ``RowGroups`` view lies on one
  view row, so those reduce per row ("row"), where the GPU's ``RowGroups``
  tile holds one group whole ("all"). Mosaic lowers no ``expm1``, so on a
  TPU mu-law values companded before the scale are expanded by
  :func:`~quantmuon.kernels.codec.expm1_from_exp`, which agrees with XLA's
  to a few ulps; in interpret mode ``jnp.expm1`` keeps them bit-exact.
  """

  def __init__(self, geo: KernelLayout, v: View, ins: dict[str, Any],
               outs: dict[str, Any], interpret: bool):
    self.geo, self.v, self.ins, self.outs = geo, v, ins, outs
    if not interpret:  # Mosaic has no expm1 (companding="before_scale")
      self.expm1 = codec_lib.expm1_from_exp
    # Padding decodes to zero, unless the codebook has no zero level; then
    # the first group_elements columns of a view row (one group) are real.
    self.mask = None
    if geo.codebook.zero_code is None:
      cols = pl.program_id(1) * v.block_cols + jax.lax.broadcasted_iota(
          jnp.int32, (1, v.block_cols), 1)
      self.mask = cols < geo.tiling.group_elements(geo.m, geo.n,
                                                   self._group_index())
    self.reduction = {RowBlocks: "row", RowGroups: "row", TwoSided: "grid",
                      Spanning: "given"}[type(geo.tiling)]
    self.lookup = codec_lib.ConstantLookup()
    self.scalars = ins["scalars"]
    self._tiled = isinstance(geo.tiling, TwoSided)

  def _read(self, ref: Any) -> Array:
    return ref[0] if self._tiled else ref[...]

  def _write(self, ref: Any, value: Array) -> None:
    if self._tiled:
      ref[0] = value
    else:
      ref[...] = value

  def load(self, name):
    return self._read(self.ins[name]).astype(jnp.float32)

  def store(self, name, value):
    self._write(self.outs[name], value)

  def load_codes(self):
    return unpack(self.geo, self._read(self.ins["codes"]))

  def store_codes(self, codes):
    self._write(self.outs["codes"], pack(self.geo, codes))

  def load_scale(self):
    scales, t = self.ins.get("scales"), self.geo.tiling
    if isinstance(t, TwoSided):
      return jnp.minimum(self._read(scales[0]).astype(jnp.float32),
                         self._read(scales[1]).astype(jnp.float32))
    if isinstance(t, Spanning) and t.axis == "tensor":
      return self.scalars[tile_lib.SCALE_IN]
    return scales[0][...].astype(jnp.float32)

  def given_scale(self):
    if self.geo.tiling.axis == "tensor":
      return self.scalars[tile_lib.SCALE_OUT]
    return self.ins["given"][...].astype(jnp.float32)

  def store_scales(self, enc):
    t, refs = self.geo.tiling, self.outs.get("scales")
    if isinstance(t, TwoSided):
      refs[0][0] = enc.row
      refs[1][0] = enc.col
    elif not isinstance(t, Spanning):
      refs[0][...] = enc.row

  def _group_index(self) -> Array:
    """The scale group of each block row (RowBlocks, RowGroups views)."""
    rows = self.v.block_rows
    return pl.program_id(0) * rows + jax.lax.broadcasted_iota(
        jnp.int32, (rows, 1), 0)

  def group_elements(self):
    return self.geo.group_elements(self._group_index())

  def group_sums(self, values):
    """A view row is one scale group: a block, or ``height`` matrix rows
    of ``n`` laid end to end. The halving sums of the reference run on
    each matrix row's segment (lane rolls, with the segment's padding
    read as zero), then across the segments' first lanes; lane 0 ends
    with the group's sum, which a sum of one nonzero lane returns exactly.
    """
    t, lanes = self.geo.tiling, values.shape[1]
    seg, rows = ((t.width, 1) if isinstance(t, RowBlocks)
                 else (self.geo.n, t.height))
    lane = jax.lax.broadcasted_iota(jnp.int32, (1, lanes), 1)
    col, row = jax.lax.rem(lane, seg), jax.lax.div(lane, seg)
    for index, size, stride in ((col, seg, 1), (row, rows, seg)):
      h = kernel_math.next_pow2(size) // 2
      while h:
        # ahead[i] = values[i + h * stride]; past the segment it is zero.
        ahead = pltpu.roll(values, lanes - h * stride, 1)
        values = values + jnp.where(index + h < size, ahead, 0.0)
        h //= 2
    return jnp.sum(jnp.where(lane == 0, values, 0.0), axis=1, keepdims=True)

  def store_stats(self, magnitude):
    axis = 1 if self.geo.tiling.axis == "row" else 0
    self.outs["stats"][0] = jnp.max(magnitude, axis=axis, keepdims=True)


class Mosaic(body.Backend):
  """The Mosaic backend: operands in the padded view, whole-block specs,
  tables as constants."""

  def __init__(self, geo: KernelLayout):
    self.geo, self.v = geo, view(geo)
    self.specs = _specs(geo, self.v)

  def operands(self, ins):
    geo, v = self.geo, self.v
    out: dict[str, Any] = {}
    for name, value in ins.items():
      if name == "codes":
        out[name] = codes_to_view(geo, v, value)
      elif name == "scales":
        out[name] = scales_to_view(geo, v, value)
      elif name == "given":
        out[name] = _spanning_to_view(geo, v, value)
      elif name == "scalars":
        out[name] = value
      else:
        out[name] = to_view(geo, v, value.reshape(geo.m, geo.n))
    t = geo.tiling
    if isinstance(t, Spanning) and t.axis == "tensor":
      # The tensor's scale rides in SMEM with the scalars.
      out.pop("given", None)
      if "scales" in out:
        out["scalars"] = out["scalars"].at[tile_lib.SCALE_IN].set(
            out.pop("scales")[0].reshape(()).astype(jnp.float32))
    return out

  def result_shape(self, name, step):
    geo, v, k, t = self.geo, self.v, self.geo.per_byte, self.geo.tiling
    if isinstance(t, TwoSided):
      elem, byte = (v.rows, t.side, t.side), (v.rows, t.side, t.side // k)
      scales = ((v.rows, t.side, 1), (v.rows, 1, t.side))
    else:
      elem, byte = (v.rows, v.cols), (v.rows, v.cols // k)
      scales = ((v.rows, 1),)
    if name == "scales":
      return tuple(jax.ShapeDtypeStruct(s, geo.scale_dtype)
                   for s in scales)
    if name == "stats":
      rows = isinstance(t, Spanning) and t.axis == "row"
      shape = (v.grid[1], v.rows, 1) if rows else (v.grid[0], 1, v.cols)
      return jax.ShapeDtypeStruct(shape, jnp.float32)
    if name == "codes":
      return jax.ShapeDtypeStruct(byte, jnp.uint8)
    dtype = step.fresh_dtype if name == "fresh" else jnp.float32
    return jax.ShapeDtypeStruct(elem, dtype)

  def call_options(self, in_names, out_names, interpret):
    def specs(names):
      return [self.specs[name][pos] if pos >= 0 else self.specs[name]
              for name, pos in names]
    return {"grid": self.v.grid, "in_specs": specs(in_names),
            "out_specs": tuple(specs(out_names)),
            "compiler_params": None if interpret else pltpu.CompilerParams(
                dimension_semantics=("parallel", "parallel"))}

  def io(self, ins, outs, interpret):
    return MosaicIO(self.geo, self.v, ins, outs, interpret)

  def natural(self, name, value):
    geo = self.geo
    if name == "scales":
      return scales_from_view(geo, value)
    if name == "codes":
      return codes_from_view(geo, self.v, value)
    if name == "stats":
      return _reduce_stats(geo, value)
    return from_view(geo, value, geo.n)
