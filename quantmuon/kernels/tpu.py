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

from quantmuon.formats import layout, packing
from quantmuon.kernels import codec as codec_lib
from quantmuon.kernels import tile as tile_lib
from quantmuon.kernels.geometry import Geometry

Array = jax.Array
LANES = 128
BLOCK_BYTES = 512 * 1024  # of one float32 block


def round_up(x: int, multiple: int) -> int:
  return layout.ceil_div(x, multiple) * multiple


@dataclasses.dataclass(frozen=True)
class View:
  """The canonical padded view of one geometry.

  Attributes:
    rows: padded rows of the view (``given``, ``rows``, ``group``) or tiles
      (``grid``).
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


def view(geo: Geometry) -> View:
  """The padded view ``geo``'s kernel runs on."""
  k = geo.per_byte
  lane = LANES * k
  if geo.kind in ("rows", "group"):
    groups, length = _groups(geo)
    cols = round_up(length, lane)
    block = _block_rows(cols)
    fast = geo.n % k == 0 and (geo.kind == "group" or geo.width % k == 0)
    return View(round_up(groups, block), cols, block, cols, fast)
  if geo.kind == "grid":
    side = geo.width
    return View(geo.row_tiles * geo.groups, side, 1, side,
                geo.n % k == 0 and side % k == 0)
  cols = min(round_up(geo.n, lane), 2048)
  block = _block_rows(cols)
  return View(round_up(geo.m, block), round_up(geo.n, cols), block, cols,
              geo.n % k == 0)


def _groups(geo: Geometry) -> tuple[int, int]:
  """(groups, elements a group) of ``rows`` and ``group`` geometries."""
  if geo.kind == "rows":
    return geo.m * geo.groups, geo.width
  return geo.row_tiles, geo.height * geo.n


def _pad2(x: Array, rows: int, cols: int, fill: Any) -> Array:
  return jnp.pad(x, ((0, rows - x.shape[0]), (0, cols - x.shape[1])),
                 constant_values=fill)


def to_view(geo: Geometry, v: View, x: Array, fill: Any = 0,
            k: int = 1) -> Array:
  """A ``(m, n)`` matrix into the view ``v``.

  Args:
    geo: the geometry.
    v: its view.
    x: the matrix, of elements (``k = 1``) or of packed bytes (``k`` codes a
      byte, for codes whose groups hold whole bytes).
    fill: the padding value.
    k: elements a column of ``x`` holds.

  Returns:
    The view-shaped array.
  """
  m = geo.m
  if geo.kind == "rows":
    width = geo.width // k
    x = _pad2(x, m, geo.groups * width, fill).reshape(m * geo.groups, width)
    return _pad2(x, v.rows, v.cols // k, fill)
  if geo.kind == "group":
    tiles = geo.row_tiles
    x = _pad2(x, tiles * geo.height, x.shape[1], fill)
    x = x.reshape(tiles, geo.height * x.shape[1])
    return _pad2(x, v.rows, v.cols // k, fill)
  if geo.kind == "grid":
    side, mt, nt = geo.width, geo.row_tiles, geo.groups
    x = _pad2(x, mt * side, nt * side // k, fill)
    x = x.reshape(mt, side, nt, side // k).transpose(0, 2, 1, 3)
    return x.reshape(mt * nt, side, side // k)
  return _pad2(x, v.rows, v.cols // k, fill)


def from_view(geo: Geometry, x: Array, cols: int, k: int = 1) -> Array:
  """Inverse of :func:`to_view`, to a matrix of ``cols`` columns."""
  m = geo.m
  if geo.kind == "rows":
    width = geo.width // k
    x = x[:m * geo.groups, :width].reshape(m, geo.groups * width)
    return x[:, :cols]
  if geo.kind == "group":
    x = x[:geo.row_tiles, :geo.height * cols]
    return x.reshape(geo.row_tiles * geo.height, cols)[:m]
  if geo.kind == "grid":
    side, mt, nt = geo.width, geo.row_tiles, geo.groups
    x = x.reshape(mt, nt, side, side // k).transpose(0, 2, 1, 3)
    return x.reshape(mt * side, nt * side // k)[:m, :cols]
  return x[:m, :cols]


def codes_to_view(geo: Geometry, v: View, codes: Array) -> Array:
  """Packed codes ``(m, packed)`` into the view, padded with zero codes."""
  codec = geo.codec
  if v.packed_fast:
    return to_view(geo, v, codes, tile_lib.zero_code_byte(codec),
                   codec.per_byte)
  unpacked = packing.unpack(codes, codec.bits, geo.n)
  out = to_view(geo, v, unpacked, codec.zero_code)
  return packing.pack(out, codec.bits)


def codes_from_view(geo: Geometry, v: View, codes: Array) -> Array:
  """Inverse of :func:`codes_to_view` (pad codes in a byte become 0)."""
  codec = geo.codec
  if v.packed_fast:
    return from_view(geo, codes, geo.packed, codec.per_byte)
  unpacked = packing.unpack(codes, codec.bits, codes.shape[-1] *
                            codec.per_byte)
  return packing.pack(from_view(geo, unpacked, geo.n), codec.bits)


def scales_to_view(geo: Geometry, v: View, scales: tuple[Array, ...]
                   ) -> tuple[Array, ...]:
  """Stored scales into the view's blocks."""
  if geo.kind in ("rows", "group"):
    col = scales[0].reshape(-1, 1)
    return (jnp.pad(col, ((0, v.rows - col.shape[0]), (0, 0))),)
  if geo.kind == "grid":
    side, mt, nt = geo.width, geo.row_tiles, geo.groups
    row = _pad2(scales[0], mt * side, nt, 0).reshape(mt, side, nt)
    row = row.transpose(0, 2, 1).reshape(mt * nt, side, 1)
    col = _pad2(scales[1], mt, nt * side, 0).reshape(mt * nt, 1, side)
    return row, col
  return (_given_to_view(geo, v, scales[0]),)


def scales_from_view(geo: Geometry, scales: tuple[Array, ...]
                     ) -> tuple[Array, ...]:
  """Inverse of :func:`scales_to_view` for encoded scales."""
  if geo.kind in ("rows", "group"):
    count = (geo.m * geo.groups if geo.kind == "rows" else geo.row_tiles)
    return (scales[0][:count].reshape(geo.scale_shapes()[0]),)
  side, mt, nt = geo.width, geo.row_tiles, geo.groups
  row = scales[0].reshape(mt, nt, side).transpose(0, 2, 1)
  row = row.reshape(mt * side, nt)[:geo.m]
  col = scales[1].reshape(mt, nt * side)[:, :geo.n]
  return row, col


def _given_to_view(geo: Geometry, v: View, scale: Array) -> Array:
  if geo.axis == "row":
    return jnp.pad(scale, ((0, v.rows - geo.m), (0, 0)))
  if geo.axis == "col":
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


def unpack(codec: codec_lib.Codec, packed: Array) -> Array:
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


def pack(codec: codec_lib.Codec, codes: Array) -> Array:
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


def _specs(geo: Geometry, v: View) -> tuple[dict[str, Any], dict[str, Any]]:
  """Block specs of the view's operands by name, and the shared ones."""
  k = geo.per_byte
  br, bc = v.block_rows, v.block_cols
  if geo.kind == "grid":
    side = geo.width

    def spec(cols):
      return pl.BlockSpec((1, side, cols), lambda i, j: (i, 0, j))

    elem, byte = spec(side), spec(side // k)
    scale = (pl.BlockSpec((1, side, 1), lambda i, j: (i, 0, 0)),
             pl.BlockSpec((1, 1, side), lambda i, j: (i, 0, 0)))
  else:
    elem = pl.BlockSpec((br, bc), lambda i, j: (i, j))
    byte = pl.BlockSpec((br, bc // k), lambda i, j: (i, j))
    if geo.kind == "given":
      scale = {"tensor": (pl.BlockSpec(memory_space=pltpu.SMEM),),
               "row": (pl.BlockSpec((br, 1), lambda i, j: (i, 0)),),
               "col": (pl.BlockSpec((1, bc), lambda i, j: (0, j)),)
               }[geo.axis]
    else:
      scale = (pl.BlockSpec((br, 1), lambda i, j: (i, 0)),)
  specs = {"codes": byte, "g": elem, "low_rank": elem, "x": elem,
           "noise": elem, "scales": scale, "given": scale[0],
           "scalars": pl.BlockSpec(memory_space=pltpu.SMEM)}
  return specs, {"elem": elem, "byte": byte, "scale": scale}


def run(geo: Geometry, step: tile_lib.Step, ins: dict[str, Any], *,
        interpret: bool) -> dict[str, Any]:
  """One fused kernel on natural-layout operands, through the view.

  Args:
    geo: the scale geometry.
    step: what the kernel computes.
    ins: ``codes`` (m, packed), ``scales`` (tuple, stored shapes), ``g``,
      ``low_rank``, ``x``, ``noise`` (m, n), ``given`` (a stored-shape
      scale) and ``scalars`` (8,).
    interpret: run in interpret mode.

  Returns:
    ``fresh`` and ``new`` (m, n), ``codes`` (m, packed), ``scales`` (tuple,
    stored shapes) and ``stats`` (the absmax of each given scale).
  """
  v = view(geo)
  vins: dict[str, Any] = {}
  for name, value in ins.items():
    if name == "codes":
      vins[name] = codes_to_view(geo, v, value)
    elif name == "scales":
      vins[name] = scales_to_view(geo, v, value)
    elif name == "given":
      vins[name] = _given_to_view(geo, v, value)
    elif name == "scalars":
      vins[name] = value
    else:
      vins[name] = to_view(geo, v, value.reshape(geo.m, geo.n))
  if geo.kind == "given" and geo.axis == "tensor":
    vins.pop("given", None)
    if "scales" in vins:
      vins["scalars"] = vins["scalars"].at[tile_lib.SCALE_IN].set(
          vins.pop("scales")[0].reshape(()).astype(jnp.float32))
  specs, shared = _specs(geo, v)
  in_names, in_vals, in_specs = [], [], []
  for name, value in vins.items():
    if isinstance(value, tuple):
      for pos, item in enumerate(value):
        in_names.append((name, pos))
        in_vals.append(item)
        in_specs.append(specs[name][pos])
    else:
      in_names.append((name, -1))
      in_vals.append(value)
      in_specs.append(specs[name])
  out_names, out_shapes, out_specs = _outputs(geo, v, step, shared)
  grid = v.grid

  def kernel(*refs):
    r = _group(in_names, refs[:len(in_names)])
    o = _group(out_names, refs[len(in_names):])
    _body(geo, step, r, o)

  results = pl.pallas_call(
      kernel, grid=grid, in_specs=in_specs, out_specs=tuple(out_specs),
      out_shape=tuple(out_shapes), interpret=interpret,
      compiler_params=None if interpret else pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel")),
      name=f"quantmuon_{geo.kind}_{step.source}_{step.sink}",
  )(*in_vals)
  o = _group(out_names, results)
  out: dict[str, Any] = {}
  for name in ("fresh", "new"):
    if name in o:
      out[name] = from_view(geo, o[name], geo.n)
  if "codes" in o:
    out["codes"] = codes_from_view(geo, v, o["codes"])
  if "scales" in o:
    out["scales"] = scales_from_view(geo, o["scales"])
  if "stats" in o:
    out["stats"] = _reduce_stats(geo, o["stats"])
  return out


def _outputs(geo: Geometry, v: View, step: tile_lib.Step,
             shared: dict[str, Any]) -> tuple[list, list, list]:
  k = geo.per_byte
  names, shapes, specs = [], [], []
  if geo.kind == "grid":
    elem_shape = (v.rows, geo.width, geo.width)
    byte_shape = (v.rows, geo.width, geo.width // k)
  else:
    elem_shape, byte_shape = (v.rows, v.cols), (v.rows, v.cols // k)

  def add(name, shape, dtype, spec, pos=-1):
    names.append((name, pos))
    shapes.append(jax.ShapeDtypeStruct(shape, dtype))
    specs.append(spec)

  if step.emit:
    add("fresh", elem_shape, step.fresh_dtype, shared["elem"])
  if step.sink == "store":
    add("new", elem_shape, jnp.float32, shared["elem"])
  elif step.sink == "stats":
    br, bc = v.block_rows, v.block_cols
    if geo.axis == "row":
      add("stats", (v.grid[1], v.rows, 1), jnp.float32,
          pl.BlockSpec((1, br, 1), lambda i, j: (j, i, 0)))
    else:
      add("stats", (v.grid[0], 1, v.cols), jnp.float32,
          pl.BlockSpec((1, 1, bc), lambda i, j: (i, 0, j)))
  else:
    add("codes", byte_shape, jnp.uint8, shared["byte"])
    dtype = geo.codec.scale_dtype
    if geo.kind == "grid":
      add("scales", (v.rows, geo.width, 1), dtype, shared["scale"][0], 0)
      add("scales", (v.rows, 1, geo.width), dtype, shared["scale"][1], 1)
    elif geo.kind != "given":
      add("scales", (v.rows, 1), dtype, shared["scale"][0], 0)
  return names, shapes, specs


def _reduce_stats(geo: Geometry, stats: Array) -> Array:
  if geo.axis == "row":
    return jnp.max(stats, axis=0)[:geo.m]
  cols = jnp.max(stats, axis=(0, 1))[None, :geo.n]
  return jnp.max(cols, keepdims=True) if geo.axis == "tensor" else cols


def _body(geo: Geometry, step: tile_lib.Step, r: dict[str, Any],
          o: dict[str, Any]) -> None:
  """The kernel body on one block of the view."""
  codec = geo.codec
  lookup = codec_lib.ConstantLookup()
  scalars = r["scalars"]
  grid = geo.kind == "grid"

  def read(ref):
    return ref[0] if grid else ref[...]

  def write(ref, value):
    if grid:
      ref[0] = value
    else:
      ref[...] = value

  low_rank = read(r["low_rank"]) if step.low_rank else None
  if step.source == "momentum":
    codes = unpack(codec, read(r["codes"]))
    decoded = codec_lib.decode(codec, codes, lookup) * _decode_scale(
        geo, r, scalars, read)
    x, g = tile_lib.momentum(step, decoded, low_rank, read(r["g"]), scalars)
    if "fresh" in o:
      write(o["fresh"], tile_lib.emit(step, x, g, scalars))
  else:
    x = read(r["x"])
    if low_rank is not None:
      x = x - low_rank
  if step.sink == "store":
    write(o["new"], x)
    return
  if step.sink == "stats":
    mag = jnp.abs(x)
    if geo.axis == "row":
      o["stats"][0] = jnp.max(mag, axis=1, keepdims=True)
    else:
      o["stats"][0] = jnp.max(mag, axis=0, keepdims=True)
    return
  given = None
  if geo.kind == "given":
    given = (scalars[tile_lib.SCALE_OUT] if geo.axis == "tensor"
             else r["given"][...].astype(jnp.float32))
  noise = read(r["noise"]) if codec.stochastic else None
  reduction = {"rows": "row", "group": "row", "grid": "grid",
               "given": "given"}[geo.kind]
  enc = tile_lib.encode(codec, reduction, x, None, given, noise, lookup)
  write(o["codes"], pack(codec, enc.codes))
  if grid:
    o["scales"][0][0] = enc.row
    o["scales"][1][0] = enc.col
  elif geo.kind != "given":
    o["scales"][0][...] = enc.row


def _decode_scale(geo: Geometry, r: dict[str, Any], scalars: Any,
                  read: Any) -> Array:
  scales = r.get("scales")
  if geo.kind == "grid":
    return jnp.minimum(read(scales[0]).astype(jnp.float32),
                       read(scales[1]).astype(jnp.float32))
  if geo.kind == "given" and geo.axis == "tensor":
    return scalars[tile_lib.SCALE_IN]
  return scales[0][...].astype(jnp.float32)


def _group(names: list[tuple[str, int]], values: Any) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for (name, pos), value in zip(names, values, strict=True):
    if pos < 0:
      out[name] = value
    else:
      out.setdefault(name, []).append(value)
  return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}

