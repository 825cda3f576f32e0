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
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from quantmuon.formats import layout
from quantmuon.kernels import codec as codec_lib
from quantmuon.kernels import tile as tile_lib
from quantmuon.kernels.geometry import Geometry

Array = jax.Array
TRITON_CALL = "__gpu$xla.gpu.triton"
# Elements a program works on: enough to hide latency with four warps.
TILE_ELEMENTS = 4096


def next_pow2(x: int) -> int:
  return 1 << max(0, int(x) - 1).bit_length()


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


def tiling(geo: Geometry) -> Tiling:
  """How ``geo`` is cut into program tiles."""
  m, n, k = geo.m, geo.n, geo.per_byte
  if geo.kind == "rows":
    cols = max(k, next_pow2(geo.width))
    rows = min(next_pow2(m), max(1, TILE_ELEMENTS // cols))
    masked = bool(m % rows or cols != geo.width or n % geo.width)
    return Tiling((layout.ceil_div(m, rows), geo.groups), rows, cols, masked)
  if geo.kind == "group":
    cols = next_pow2(geo.packed) * k
    rows = next_pow2(geo.height)
    masked = bool(rows != geo.height or m % geo.height or cols != n)
    return Tiling((geo.row_tiles,), rows, cols, masked)
  if geo.kind == "grid":
    side = max(k, next_pow2(geo.width))
    masked = bool(side != geo.width or m % geo.width or n % geo.width)
    return Tiling((geo.row_tiles, geo.groups), side, side, masked)
  cols = max(k, min(next_pow2(n), 1024))
  rows = min(next_pow2(m), max(1, TILE_ELEMENTS // cols))
  masked = bool(m % rows or n % cols)
  return Tiling((layout.ceil_div(m, rows), layout.ceil_div(n, cols)), rows,
                cols, masked)


def num_warps(t: Tiling) -> int:
  elements = t.rows * t.cols
  return 4 if elements <= 4096 else 8 if elements <= 8192 else 16


@dataclasses.dataclass
class Index:
  """Where a program's tile lies: rows, columns, offsets and masks."""

  rows: Array            # (R, 1) global rows
  cols: Array            # (1, C) global columns
  local_rows: Array      # (R, 1)
  local_cols: Array      # (1, C)
  elements: Array        # (R, C) offsets into (m * n) arrays
  mask: Array | None     # (R, C)
  bytes_: Array          # (R, C / k) offsets into (m * packed) codes
  byte_mask: Array | None
  row_mask: Array | None  # (R, 1)
  col_mask: Array | None  # (1, C)


def _and(*masks: Array | None) -> Array | None:
  out = None
  for mask in masks:
    if mask is not None:
      out = mask if out is None else out & mask
  return out


def index(geo: Geometry, t: Tiling) -> Index:
  """The tile of the running program (call inside a kernel)."""
  m, n, k, packed = geo.m, geo.n, geo.per_byte, geo.packed
  lr = jax.lax.broadcasted_iota(jnp.int32, (t.rows, 1), 0)
  lc = jax.lax.broadcasted_iota(jnp.int32, (1, t.cols), 1)
  lb = jax.lax.broadcasted_iota(jnp.int32, (1, t.cols // k), 1)
  i = pl.program_id(0)
  j = pl.program_id(1) if len(t.grid) > 1 else 0
  if geo.kind == "rows":
    rows, cols = i * t.rows + lr, j * geo.width + lc
    bcols = j * (geo.width // k) + lb
    local_row_ok, local_col_ok = None, lc < geo.width
    local_byte_ok = lb < layout.ceil_div(geo.width, k)
  elif geo.kind == "group":
    rows, cols, bcols = i * geo.height + lr, lc, lb
    local_row_ok, local_col_ok = lr < geo.height, None
    local_byte_ok = None
  elif geo.kind == "grid":
    side = geo.width
    rows, cols = i * side + lr, j * side + lc
    bcols = j * (side // k) + lb
    local_row_ok, local_col_ok = lr < side, lc < side
    local_byte_ok = lb < layout.ceil_div(side, k)
  else:
    rows, cols = i * t.rows + lr, j * t.cols + lc
    bcols = j * (t.cols // k) + lb
    local_row_ok = local_col_ok = local_byte_ok = None
  if t.masked:
    row_mask = _and(local_row_ok, rows < m)
    col_mask = _and(local_col_ok, cols < n)
    mask = row_mask & col_mask
    byte_mask = row_mask & _and(local_byte_ok, bcols < packed)
  else:
    row_mask = col_mask = mask = byte_mask = None
  return Index(rows=rows, cols=cols, local_rows=lr, local_cols=lc,
               elements=rows * n + cols, mask=mask,
               bytes_=rows * packed + bcols, byte_mask=byte_mask,
               row_mask=row_mask, col_mask=col_mask)


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


def unpack(codec: codec_lib.Codec, packed: Array) -> Array:
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


def pack(codec: codec_lib.Codec, codes: Array) -> Array:
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


def _scale_io(geo: Geometry, ix: Index) -> tuple[Callable, Callable]:
  """Functions reading the stored scales of a tile and writing new ones."""
  if geo.kind == "rows":
    offsets = ix.rows * geo.groups + pl.program_id(1)

    def read(refs):
      return load(refs[0], offsets, ix.row_mask).astype(jnp.float32)

    def write(refs, enc):
      store(refs[0], offsets, enc.row, ix.row_mask)
  elif geo.kind == "group":
    i = pl.program_id(0)

    def read(refs):
      return refs[0][i].astype(jnp.float32)

    def write(refs, enc):
      refs[0][i] = enc.row.reshape(())
  elif geo.kind == "grid":
    row_off = ix.rows * geo.groups + pl.program_id(1)
    col_off = pl.program_id(0) * geo.n + ix.cols

    def read(refs):
      row = load(refs[0], row_off, ix.row_mask).astype(jnp.float32)
      col = load(refs[1], col_off, ix.col_mask).astype(jnp.float32)
      return jnp.minimum(row, col)

    def write(refs, enc):
      store(refs[0], row_off, enc.row, ix.row_mask)
      store(refs[1], col_off, enc.col, ix.col_mask)
  else:
    def read(refs):
      return _given(geo, ix, refs[0])

    def write(refs, enc):
      del refs, enc
  return read, write


def _given(geo: Geometry, ix: Index, ref: Any) -> Array:
  """A scale of ``given`` geometry: the tensor's, a row's or a column's."""
  if geo.axis == "tensor":
    return ref[0].astype(jnp.float32)
  if geo.axis == "row":
    return load(ref, ix.rows, ix.row_mask).astype(jnp.float32)
  return load(ref, ix.cols, ix.col_mask).astype(jnp.float32)


def reduction(geo: Geometry) -> str:
  return {"rows": "row", "group": "all", "grid": "grid",
          "given": "given"}[geo.kind]


def launch(geo: Geometry, step: tile_lib.Step, ins: dict[str, Any],
           outs: dict[str, jax.ShapeDtypeStruct], *,
           interpret: bool) -> dict[str, Array]:
  """Runs one fused kernel over flat views of its operands.

  Args:
    geo: the scale geometry.
    step: what the kernel computes.
    ins: flat operands by name: ``codes``, ``scales`` (a tuple), ``g``,
      ``low_rank``, ``x``, ``noise``, ``given`` and ``scalars``.
    outs: flat results by name: ``fresh``, ``new``, ``codes``, ``scales`` (a
      tuple) and ``stats``.
    interpret: run in interpret mode.

  Returns:
    The results by name (``scales`` as a tuple).
  """
  t = tiling(geo)
  codec = geo.codec
  tables = {name: jnp.asarray(codec_lib.padded_table(codec.table(name)))
            for name in codec.table_names()}
  in_names, in_vals = _flatten({**ins, "tables": tuple(tables.values())})
  out_names, out_shapes = _flatten(outs)
  table_names = tuple(tables)

  def kernel(*refs):
    r = _group(in_names, refs[:len(in_names)])
    o = _group(out_names, refs[len(in_names):])
    lookup = codec_lib.GatherLookup(dict(zip(table_names,
                                             r.get("tables", ()),
                                             strict=True)))
    ix = index(geo, t)
    read_scale, write_scale = _scale_io(geo, ix)
    scalars = r["scalars"]

    def elementwise(name):
      return load(r[name], ix.elements, ix.mask).astype(jnp.float32)

    low_rank = elementwise("low_rank") if step.low_rank else None
    if step.source == "momentum":
      codes = unpack(codec, load(r["codes"], ix.bytes_, ix.byte_mask))
      decoded = codec_lib.decode(codec, codes, lookup) * read_scale(
          r["scales"])
      g = load(r["g"], ix.elements, ix.mask)
      x, g = tile_lib.momentum(step, decoded, low_rank, g, scalars)
      if "fresh" in o:
        store(o["fresh"], ix.elements, tile_lib.emit(step, x, g, scalars),
              ix.mask)
    else:
      x = elementwise("x")
      if low_rank is not None:
        x = x - low_rank
    if step.sink == "store":
      store(o["new"], ix.elements, x, ix.mask)
      return
    if step.sink == "stats":
      _store_stats(geo, t, ix, o["stats"], tile_lib.absmax(x, ix.mask))
      return
    given = None
    if geo.kind == "given":
      given = (scalars[tile_lib.SCALE_OUT] if geo.axis == "tensor"
               else _given(geo, ix, r["given"]))
    noise = elementwise("noise") if codec.stochastic else None
    enc = tile_lib.encode(codec, reduction(geo), x, ix.mask, given, noise,
                          lookup)
    codes = enc.codes if ix.mask is None else jnp.where(ix.mask, enc.codes, 0)
    store(o["codes"], ix.bytes_, pack(codec, codes), ix.byte_mask)
    write_scale(o.get("scales"), enc)

  results = pl.pallas_call(
      kernel, grid=t.grid, out_shape=tuple(out_shapes), interpret=interpret,
      compiler_params=None if interpret else pltriton.CompilerParams(
          num_warps=num_warps(t), num_stages=1),
      name=f"quantmuon_{geo.kind}_{step.source}_{step.sink}",
  )(*in_vals)
  return _group(out_names, results)


def _store_stats(geo: Geometry, t: Tiling, ix: Index, ref: Any,
                 mag: Array) -> None:
  """Partial absmax of a ``given`` tile: per column, or per row."""
  if geo.axis == "row":
    offsets = pl.program_id(1) * geo.m + ix.rows
    store(ref, offsets, jnp.max(mag, axis=1, keepdims=True), ix.row_mask)
  else:
    offsets = pl.program_id(0) * geo.n + ix.cols
    store(ref, offsets, jnp.max(mag, axis=0, keepdims=True), ix.col_mask)


def stats_shape(geo: Geometry) -> tuple[int, ...]:
  """Flat shape of the partial absmax a stats pass writes."""
  t = tiling(geo)
  if geo.axis == "row":
    return (t.grid[1] * geo.m,)
  return (t.grid[0] * geo.n,)


def stats_reduce(geo: Geometry, partial: Array) -> Array:
  """Partial absmax -> the absmax of each given scale (before its dtype)."""
  t = tiling(geo)
  if geo.axis == "row":
    return jnp.max(partial.reshape(t.grid[1], geo.m), axis=0)[:, None]
  cols = jnp.max(partial.reshape(t.grid[0], geo.n), axis=0)[None, :]
  return jnp.max(cols, keepdims=True) if geo.axis == "tensor" else cols


def _flatten(named: dict[str, Any]) -> tuple[list[tuple[str, int]], list]:
  """Named values (tuples allowed) -> (names with positions, flat list)."""
  names, values = [], []
  for name, value in named.items():
    if isinstance(value, tuple):
      for pos, v in enumerate(value):
        names.append((name, pos))
        values.append(v)
    else:
      names.append((name, -1))
      values.append(value)
  return names, values


def _group(names: list[tuple[str, int]], values: Any) -> dict[str, Any]:
  """Inverse of :func:`_flatten`."""
  out: dict[str, Any] = {}
  for (name, pos), value in zip(names, values, strict=True):
    if pos < 0:
      out[name] = value
    else:
      out.setdefault(name, [])
      out[name].append(value)
  return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}



def run(geo: Geometry, step: tile_lib.Step, ins: dict[str, Any], *,
        interpret: bool) -> dict[str, Any]:
  """One fused kernel on natural-layout operands (see ``tpu.run``)."""
  m, n = geo.m, geo.n
  flat_ins: dict[str, Any] = {}
  for name, value in ins.items():
    if name == "scales":
      flat_ins[name] = tuple(s.reshape(-1) for s in value)
    elif name == "given" and geo.axis == "tensor":
      continue
    else:
      flat_ins[name] = value.reshape(-1)
  outs: dict[str, Any] = {}
  if step.emit:
    outs["fresh"] = jax.ShapeDtypeStruct((m * n,), step.fresh_dtype)
  if step.sink == "store":
    outs["new"] = jax.ShapeDtypeStruct((m * n,), jnp.float32)
  elif step.sink == "stats":
    outs["stats"] = jax.ShapeDtypeStruct(stats_shape(geo), jnp.float32)
  else:
    outs["codes"] = jax.ShapeDtypeStruct((m * geo.packed,), jnp.uint8)
    if geo.kind != "given":
      outs["scales"] = tuple(
          jax.ShapeDtypeStruct((a * b,), geo.codec.scale_dtype)
          for a, b in geo.scale_shapes())
  res = launch(geo, step, flat_ins, outs, interpret=interpret)
  out: dict[str, Any] = {}
  for name in ("fresh", "new"):
    if name in res:
      out[name] = res[name].reshape(m, n)
  if "codes" in res:
    out["codes"] = res["codes"].reshape(m, geo.packed)
  if "scales" in res:
    out["scales"] = tuple(s.reshape(shape) for s, shape in
                          zip(res["scales"], geo.scale_shapes(), strict=True))
  if "stats" in res:
    out["stats"] = stats_reduce(geo, res["stats"])
  return out
