"""The tile body every fused kernel runs, and the I/O it runs through.

A kernel is a *source* of the values to store and a *sink* for them
(``tile.Source``, ``tile.Sink``). :func:`run` is that kernel on one tile,
written once for both backends; a backend supplies only a :class:`TileIO`:
how its tile's elements, codes and scales are loaded and stored (Triton:
offsets and masks into flat arrays; Mosaic: whole blocks of a padded view).
The math itself is :mod:`quantmuon.momentum_op`'s and the codebook's, so
interpret-mode kernels reproduce the XLA path's codes bit for bit.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from quantmuon import momentum_op
from quantmuon.formats import codebooks, kernel_math, layout
from quantmuon.formats.kernel_layout import KernelLayout, Spanning
from quantmuon.kernels import tile as tile_lib

Array = jax.Array
Names = list[tuple[str, int]]


class TileIO(abc.ABC):
  """One program's tile: where it lies and how its operands move.

  Attributes:
    mask: where the tile lies inside the array, or None (all of it).
    reduction: how the tile's scale groups lie in it (one of
      ``tile.REDUCTIONS``); a property of the backend's tiling.
    lookup: how the codebook's tables are read.
    scalars: the ref of runtime scalars (``tile.scalars_vector``).
    expm1: ``jnp.expm1``, or what the backend lowers in its place.
  """

  mask: Array | None
  reduction: str
  lookup: codebooks.Lookup
  scalars: Any
  expm1: Callable[[Array], Array] = staticmethod(jnp.expm1)

  @abc.abstractmethod
  def load(self, name: str) -> Array:
    """An element operand (``g``, ``x``, ``low_rank``, ``noise``), f32."""

  @abc.abstractmethod
  def store(self, name: str, value: Array) -> None:
    """An element result (``fresh``, ``new``)."""

  @abc.abstractmethod
  def load_codes(self) -> Array:
    """The tile's stored codes, unpacked to int32."""

  @abc.abstractmethod
  def store_codes(self, codes: Array) -> None:
    """The tile's new int32 codes, packed."""

  @abc.abstractmethod
  def load_scale(self) -> Array:
    """The stored scale of each element (broadcastable), float32."""

  @abc.abstractmethod
  def given_scale(self) -> Array:
    """The scale to encode with, when it is given (``reduction="given"``)."""

  @abc.abstractmethod
  def store_scales(self, enc: tile_lib.Encoded) -> None:
    """The scales found for the tile (nothing when they are given)."""

  def group_sums(self, values: Array) -> Array:
    """The sum of each of the tile's scale groups (``reduction`` "row":
    each row; "all": the tile) of ``values``, zero outside the matrix, in
    the order of the reference: ``kernel_math.halving_sum`` over the
    columns, then the rows. Right for a tile of whole groups whose
    columns and rows are the matrix's, zero-padded."""
    out = kernel_math.halving_sum(values, 1)
    return out if self.reduction == "row" else kernel_math.halving_sum(out, 0)

  @abc.abstractmethod
  def group_elements(self) -> Array:
    """float32 elements inside the matrix of each of the tile's scale
    groups, broadcastable to its scales (``KernelLayout.group_elements``
    at their indices)."""

  @abc.abstractmethod
  def store_stats(self, magnitude: Array) -> None:
    """The partial absmax of a tile, for scales that span several."""


def run(step: tile_lib.Step, codec: KernelLayout, io: TileIO) -> None:
  """The fused kernel ``step`` on the tile ``io``.

  Args:
    step: what the kernel computes.
    codec: the kernel layout (codebook, rounding, companding).
    io: the backend's tile.
  """
  low_rank = io.load("low_rank") if step.low_rank else None
  if step.source is tile_lib.Source.MOMENTUM:
    s = tile_lib.read_scalars(io.scalars)
    m = codec.codebook.decode_scaled(io.load_codes(), io.load_scale(),
                                     io.lookup)
    if codec.compand is not None:
      m = codec.compand.expand(m, io.expm1)
    if low_rank is not None:
      m = m + low_rank
    x, g = momentum_op.accumulate(m, io.load("g"), s, step.cfg)
    if step.emit:
      io.store("fresh", momentum_op.emit(x, g, s, step.cfg).astype(
          step.fresh_dtype))
  else:
    x = io.load("x")
    if low_rank is not None:
      x = x - low_rank
  if step.sink is tile_lib.Sink.STORE:
    io.store("new", x)
    return
  # A group holding a NaN or an inf gets an inf scale, as in the formats;
  # companding would clip the flag to one.
  x = layout.flag_non_finite(x)
  if codec.compand is not None:
    x = jnp.where(x == jnp.inf, x, codec.compand.compand(x))
  if step.sink is tile_lib.Sink.STATS:
    io.store_stats(tile_lib.magnitude(x, io.mask))
    return
  given = io.given_scale() if io.reduction == "given" else None
  count = (io.group_elements() if codec.statistic.counts and given is None
           else None)
  noise = io.load("noise") if codec.stochastic else None
  enc = tile_lib.encode(codec, io.reduction, x, io.mask, given, count,
                        io.group_sums, noise, io.lookup)
  io.store_codes(enc.codes)
  io.store_scales(enc)


class Backend(abc.ABC):
  """A backend of the fused kernels: its layout of operands and results, its
  launch options and its tile I/O. :func:`launch` does the rest.

  Attributes:
    geo: the kernel layout the kernel runs on.
  """

  geo: KernelLayout

  @abc.abstractmethod
  def operands(self, ins: dict[str, Any]) -> dict[str, Any]:
    """Natural-layout operands (see :func:`launch`) in the backend's."""

  @abc.abstractmethod
  def result_shape(self, name: str, step: tile_lib.Step) -> Any:
    """The backend-layout ``ShapeDtypeStruct`` (a tuple for ``scales``)."""

  @abc.abstractmethod
  def call_options(self, in_names: Names, out_names: Names,
                   interpret: bool) -> dict[str, Any]:
    """``pallas_call`` options: the grid, block specs, compiler params."""

  @abc.abstractmethod
  def io(self, ins: dict[str, Any], outs: dict[str, Any],
         interpret: bool) -> TileIO:
    """The running program's tile over its refs."""

  @abc.abstractmethod
  def natural(self, name: str, value: Any) -> Any:
    """A result in the natural layout (see :func:`launch`)."""


def launch(backend: Backend, step: tile_lib.Step, ins: dict[str, Any], *,
           interpret: bool) -> dict[str, Any]:
  """One fused kernel on natural-layout operands.

  Args:
    backend: the backend, for one geometry.
    step: what the kernel computes.
    ins: ``codes`` (m, packed), ``scales`` (tuple, stored shapes), ``g``,
      ``low_rank``, ``x``, ``noise`` (m, n), ``given`` (a stored-shape
      scale) and ``scalars`` (the vector of ``tile.scalars_vector``).
    interpret: run in interpret mode.

  Returns:
    ``fresh`` and ``new`` (m, n), ``codes`` (m, packed), ``scales`` (tuple,
    stored shapes) and ``stats`` (the absmax of each spanning scale), those
    the step writes.
  """
  geo = backend.geo
  in_names, in_vals = flatten(backend.operands(ins))
  finds_scales = not isinstance(geo.tiling, Spanning)
  out_names, out_shapes = flatten(
      {name: backend.result_shape(name, step)
       for name in results(step, finds_scales)})

  def kernel(*refs):
    io = backend.io(group(in_names, refs[:len(in_names)]),
                    group(out_names, refs[len(in_names):]), interpret)
    run(step, geo, io)

  outs = pl.pallas_call(
      kernel, out_shape=tuple(out_shapes), interpret=interpret,
      name=f"quantmuon_{geo.kind}_{step.name}",
      **backend.call_options(in_names, out_names, interpret))(*in_vals)
  return {name: backend.natural(name, value)
          for name, value in group(out_names, outs).items()}


def results(step: tile_lib.Step, finds_scales: bool) -> tuple[str, ...]:
  """The names of a kernel's results, in the order backends declare them.

  ``fresh`` and ``new`` are elements, ``stats`` partial maxima, ``codes``
  packed codes and ``scales`` the tuple of found scales.
  """
  names = ["fresh"] if step.emit else []
  if step.sink is tile_lib.Sink.STORE:
    names.append("new")
  elif step.sink is tile_lib.Sink.STATS:
    names.append("stats")
  else:
    names.append("codes")
    if finds_scales:
      names.append("scales")
  return tuple(names)


def flatten(named: dict[str, Any]) -> tuple[Names, list[Any]]:
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


def group(names: Names, values: Any) -> dict[str, Any]:
  """Inverse of :func:`flatten`."""
  out: dict[str, Any] = {}
  for (name, pos), value in zip(names, values, strict=True):
    if pos < 0:
      out[name] = value
    else:
      out.setdefault(name, []).append(value)
  return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}
