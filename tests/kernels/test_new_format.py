"""A format gets its kernel by describing its own kernel layout, alone.

``PerRow`` is a toy format written here and nowhere else: 8-bit linear
codes with one absmax scale a row, stored under part names of its own.
It implements ``kernel_layout``, ``kernel_noise``, ``kernel_parts`` and
``kernel_assemble``; nothing in ``quantmuon/`` knows it. Both drivers then
run it in interpret mode, bit-exact against the XLA path, and it lowers
for TPU and CUDA.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from quantmuon import formats, kernels
from quantmuon.formats import codebooks, layout, packing
from quantmuon.formats.base import Format, Stored
from quantmuon.formats.kernel_layout import (
  FactoredFormat,
  KernelFormat,
  KernelLayout,
  RowBlocks,
)
from quantmuon.momentum_op import Config

from . import util


@dataclasses.dataclass(frozen=True)
class PerRow(Format):
  """Linear codes with one float32 absmax scale a row (a test format)."""

  bits: int = 8

  @property
  def book(self) -> codebooks.Codebook:
    return codebooks.Linear(self.bits)

  def _encode(self, x, *, key, previous) -> Stored:
    del key, previous
    m, n = layout.matrix_shape(x.shape)
    mat = x.reshape(m, n).astype(jnp.float32)
    scale = jnp.max(jnp.abs(mat), axis=1, keepdims=True)
    codes = self.book.encode(mat / layout.safe_scale(scale))
    return self.kernel_assemble(packing.pack(codes, self.bits), (scale,),
                                x.shape, x.dtype)

  def _decode(self, stored: Stored) -> jax.Array:
    m, n = layout.matrix_shape(stored.shape)
    codes = packing.unpack(stored["q"].reshape(m, -1), self.bits, n)
    y = self.book.decode(codes) * stored["row_absmax"]
    return y.reshape(stored.shape)

  def kernel_layout(self, shape) -> KernelLayout:
    m, n = layout.matrix_shape(shape)
    return KernelLayout(m, n, RowBlocks(width=n, groups=1), self.book,
                        stochastic=False, scale_dtype=jnp.dtype(jnp.float32))

  def kernel_noise(self, key, shape) -> None:
    del key, shape

  def kernel_parts(self, stored: Stored) -> tuple[Any, tuple[Any, ...]]:
    m = layout.matrix_shape(stored.shape)[0]
    return stored["q"].reshape(m, -1), (stored["row_absmax"],)

  def kernel_assemble(self, codes, scales, shape, dtype=jnp.float32
                      ) -> Stored:
    (scale,) = scales
    codes = codes.reshape(layout.codes_shape(shape, codes.shape[-1]))
    return Stored({"q": codes, "row_absmax": scale}, self, shape, dtype)


CFG = Config("sum", False, True)
SHAPE = (40, 300)


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
@pytest.mark.parametrize("bits", [8, 4])
def test_toy_format_runs_its_kernel_bit_exact(backend, bits):
  fmt = PerRow(bits)
  rng = np.random.default_rng(0)
  stored = util.random_state(fmt, SHAPE, rng)
  g = jnp.asarray(rng.standard_normal(SHAPE), jnp.float32)
  count, key = jnp.asarray(2, jnp.int32), jax.random.key(0)
  fresh_ref, ref = util.stepper(CFG, "xla")(stored, g, count, key)
  fresh, out = util.stepper(CFG, backend)(stored, g, count, key)
  util.assert_close(fresh_ref, fresh, "fresh momentum")
  util.assert_same_state(ref, out)
  assert sorted(out.parts) == ["q", "row_absmax"]
  assert np.any(np.asarray(out["q"]) != np.asarray(stored["q"]))


def test_formats_with_kernels_implement_the_protocols():
  assert isinstance(PerRow(), KernelFormat)
  for fmt in (formats.Blockwise(), formats.Axiswise(), formats.Grid()):
    assert isinstance(fmt, KernelFormat), fmt
  assert isinstance(formats.Subspace(), FactoredFormat)
  assert not isinstance(formats.Float(), KernelFormat)


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_toy_format_lowers(platform):
  fmt = PerRow()

  def step(stored, g):
    return kernels.momentum_step(
        stored, g, beta=0.9, accumulation="sum", normalize=False,
        nesterov=True, count=jnp.asarray(1, jnp.int32), key=None,
        impl="pallas")

  exported = jax.export.export(
      jax.jit(step), platforms=[platform],
      disabled_checks=kernels.export_disabled_checks())(
          fmt.init(SHAPE), jnp.ones(SHAPE))
  assert "quantmuon_rows_momentum_encode" in exported.mlir_module()
