"""Fused momentum updates of the absmax formats: Blockwise, Axiswise, Grid.

One kernel family per way the formats cut a matrix into scale groups (see
:mod:`quantmuon.kernels.geometry`):

- Blockwise (``rows``, ``group``): one pass. Each program decodes its
  blocks, accumulates the gradient, finds the blocks' absmax, encodes, and
  writes the fresh momentum, the codes and the scales.
- Grid (``grid``): one pass; a program holds one tile and finds its row and
  column absmax.
- Axiswise (``given``): a scale spans the tensor, a row or a column, so a
  stats pass (decode, accumulate, partial absmax) precedes the fused pass,
  which encodes with the reduced scales. Max is exact in any order, so the
  two passes give the reference's scales exactly.

MuonQ's normalization divides by the Frobenius norms of the gradient and of
the new momentum. Those two norms come from a norm pass written as the XLA
path writes them (one fused reduction on device), so the kernel divides by
the very same numbers and codes stay bit-identical: a reduction reordered
across tiles would move the norm by an ulp and flip codes.

The reference of every kernel here is :func:`quantmuon.momentum_op.reference`,
the XLA path.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from quantmuon import formats, momentum_op
from quantmuon.formats import layout
from quantmuon.formats.kernel_layout import KernelFormat, KernelLayout, Spanning
from quantmuon.kernels import body, geometry, gpu, tpu
from quantmuon.kernels import tile as tile_lib

Array = jax.Array


def scalars(stored: formats.Stored, g: Array, *, beta: Any,
            cfg: momentum_op.Config, count: Array) -> Array:
  """The runtime scalars of a step as the kernels' vector.

  With ``normalize``, this is the norm pass: the gradient's norm, and the
  norm of the momentum accumulated from the XLA decode.
  """
  m = stored.format.decode(stored) if cfg.normalize else None
  return tile_lib.scalars_vector(
      momentum_op.scalars(m, g, beta=beta, cfg=cfg, count=count))


def run(geo: KernelLayout, step: tile_lib.Step, ins: dict[str, Any],
        backend: str, interpret: bool) -> dict[str, Any]:
  """One kernel launch on the ``gpu`` (Triton) or ``tpu`` (Mosaic) driver."""
  driver = gpu.Triton if backend == "gpu" else tpu.Mosaic
  return body.launch(driver(geo), step, ins, interpret=interpret)


def _encode(geo: KernelLayout, fmt: KernelFormat, base: tile_lib.Step,
            ins: dict[str, Any], key: Array | None, shape: tuple[int, ...],
            backend: str, interpret: bool
            ) -> tuple[dict[str, Any], formats.Stored]:
  """The encoding launch(es) of a step: a stats pass first for scales that
  span several tiles."""
  ins = dict(ins)
  spanning = isinstance(geo.tiling, Spanning)
  if spanning:
    stats = run(geo, dataclasses.replace(base, sink=tile_lib.Sink.STATS,
                                         emit=False),
                ins, backend, interpret)["stats"]
    given = layout.round_scale(stats, geo.scale_dtype)
    ins["given"] = given
    ins["scalars"] = ins["scalars"].at[tile_lib.SCALE_OUT].set(
        given.reshape(-1)[0].astype(jnp.float32))
  drawn = fmt.kernel_noise(key, shape)
  if drawn is not None:
    ins["noise"] = drawn
  out = run(geo, dataclasses.replace(base, sink=tile_lib.Sink.ENCODE), ins,
            backend, interpret)
  scales = (ins["given"],) if spanning else out["scales"]
  return out, fmt.kernel_assemble(out["codes"], scales, shape)


def _momentum_ins(geo: KernelLayout, stored: formats.Stored, g: Array,
                  step_scalars: Array, low_rank: Array | None
                  ) -> dict[str, Any]:
  codes, scales = stored.format.kernel_parts(stored)
  ins = {"codes": codes, "scales": scales, "g": g.reshape(geo.m, geo.n),
         "scalars": step_scalars}
  if low_rank is not None:
    ins["low_rank"] = low_rank.reshape(geo.m, geo.n)
  return ins


def step(stored: formats.Stored, g: Array, *, cfg: momentum_op.Config,
         step_scalars: Array, key: Array | None, backend: str,
         interpret: bool) -> tuple[Array, formats.Stored]:
  """The fused momentum step of a Blockwise, Axiswise or Grid leaf.

  Args:
    stored: the stored momentum.
    g: the gradient.
    cfg: accumulation, normalization and Nesterov.
    step_scalars: from :func:`scalars`.
    key: key for stochastic rounding, or None.
    backend: ``gpu`` or ``tpu`` (which driver builds the kernel).
    interpret: run the kernel in interpret mode.

  Returns:
    ``(fresh momentum in g's dtype, new stored momentum)``.
  """
  fmt = stored.format
  geo = geometry.of(fmt, stored.shape)
  base = tile_lib.Step(tile_lib.Source.MOMENTUM, tile_lib.Sink.ENCODE,
                       cfg=cfg, emit=True, fresh_dtype=g.dtype)
  ins = _momentum_ins(geo, stored, g, step_scalars, None)
  out, new = _encode(geo, fmt, base, ins, key, stored.shape, backend,
                     interpret)
  return out["fresh"].reshape(g.shape), new


def accumulate(stored: formats.Stored, g: Array, *, low_rank: Array,
               cfg: momentum_op.Config, step_scalars: Array, backend: str,
               interpret: bool) -> tuple[Array, Array | None]:
  """Decode (plus a low-rank term), accumulate, emit; keep the float32 sum.

  The first kernel of the ``Subspace`` path.

  Returns:
    ``(new momentum (m, n) float32, fresh momentum or None when it is the
    new momentum itself)``.
  """
  fmt = stored.format
  geo = geometry.of(fmt, stored.shape)
  plain = cfg.emits_new and g.dtype == jnp.float32
  step_ = tile_lib.Step(tile_lib.Source.MOMENTUM, tile_lib.Sink.STORE,
                        cfg=cfg, emit=not plain, low_rank=1,
                        fresh_dtype=g.dtype)
  ins = _momentum_ins(geo, stored, g, step_scalars, low_rank)
  out = run(geo, step_, ins, backend, interpret)
  return out["new"], None if plain else out["fresh"]


def encode(fmt: KernelFormat, x: Array, *, low_rank: Array,
           shape: tuple[int, ...], key: Array | None, backend: str,
           interpret: bool) -> formats.Stored:
  """``fmt.encode(x - low_rank)`` in one fused pass (two for Axiswise).

  The second kernel of the ``Subspace`` path: the residual is never
  written.
  """
  geo = geometry.of(fmt, shape)
  base = tile_lib.Step(tile_lib.Source.INPUT, tile_lib.Sink.ENCODE,
                       low_rank=-1)
  ins = {"x": x.reshape(geo.m, geo.n),
         "low_rank": low_rank.reshape(geo.m, geo.n),
         "scalars": tile_lib.scalars_vector(momentum_op.Scalars(0.0, 1.0))}
  return _encode(geo, fmt, base, ins, key, shape, backend, interpret)[1]
