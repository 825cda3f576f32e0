"""Every kernel lowers for TPU and for CUDA, on this CPU-only machine.

``jax.export`` with ``platforms=["tpu"]`` runs Pallas's Mosaic lowering and
``["cuda"]`` its Triton lowering without either device. Each exported
module must hold the kernel's custom call and the kernel by name.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import quantmuon as qm
from quantmuon import formats as F
from quantmuon import kernels

CUSTOM_CALLS = {"tpu": "tpu_custom_call", "cuda": kernels.TRITON_CALL}
F16 = jnp.float16
MIDRISE_RMS = F.Blockwise(bits=2, codebook="midrise", clip_rms=1.5,
                          block_size=128, scale_dtype=F16)

# Each kernel (family, source, sink) with the codebooks and widths.
CASES = {
    "blockwise_rows_8bit": (F.Blockwise(bits=8), (64, 4096), False,
                            ["rows_momentum_encode"]),
    "blockwise_group_dynamic": (F.Blockwise(bits=8, codebook="dynamic"),
                                (384, 200), False,
                                ["group_momentum_encode"]),
    "blockwise_4bit_mulaw_odd": (F.Blockwise(bits=4, codebook="mulaw",
                                             block_size=128), (64, 201),
                                 True, ["rows_momentum_encode"]),
    "blockwise_2bit_stochastic": (F.Blockwise(bits=2, block_size=256,
                                              rounding="stochastic"),
                                  (40, 300), False, ["rows_momentum_encode"]),
    "axiswise_tensor_f16": (F.Axiswise(bits=4, codebook="mulaw",
                                       scale_dtype=F16), (384, 200), True,
                            ["given_momentum_stats", "given_momentum_encode"]),
    "axiswise_col": (F.Axiswise(bits=8, axis="col"), (130, 200), False,
                     ["given_momentum_stats", "given_momentum_encode"]),
    "axiswise_row_2bit": (F.Axiswise(bits=2, axis="row"), (130, 203), False,
                          ["given_momentum_stats", "given_momentum_encode"]),
    "blockwise_f16_scales": (F.Blockwise(bits=4, block_size=128,
                                         scale_dtype=F16), (64, 201), False,
                             ["rows_momentum_encode"]),
    "blockwise_before_scale": (F.Blockwise(bits=4, codebook="mulaw",
                                           block_size=128, scale_dtype=F16,
                                           companding="before_scale"),
                               (64, 201), True, ["rows_momentum_encode"]),
    "axiswise_before_scale": (F.Axiswise(bits=4, codebook="mulaw",
                                         scale_dtype=F16,
                                         companding="before_scale"),
                              (384, 200), True, ["given_momentum_stats",
                                                 "given_momentum_encode"]),
    "grid_4bit": (F.Grid(bits=4), (384, 200), False,
                  ["grid_momentum_encode"]),
    "grid_bf16_scales": (F.Grid(bits=4, scale_dtype=jnp.bfloat16), (384, 200),
                         False, ["grid_momentum_encode"]),
    "grid_dynamic_stochastic": (F.Grid(bits=8, tile=32, codebook="dynamic",
                                       rounding="stochastic"), (100, 70),
                                False, ["grid_momentum_encode"]),
    "subspace_grid": (F.Subspace(residual=F.Grid(bits=4)), (256, 200), False,
                      ["grid_momentum_store", "grid_input_encode"]),
    "subspace_axiswise": (F.Subspace(
        factors=F.Axiswise(bits=4, codebook="mulaw", axis="col",
                           scale_dtype=F16),
        residual=F.Axiswise(bits=4, codebook="mulaw", scale_dtype=F16)),
        (256, 200), True, ["given_momentum_store", "given_input_stats",
                           "given_input_encode"]),
    "subspace_blockwise": (F.Subspace(residual=F.Blockwise(
        bits=4, block_size=128)), (256, 200), False,
        ["rows_momentum_store", "rows_input_encode"]),
    # RMS scales, midrise codes: muon_lowbit(bits=2)'s residual.
    "blockwise_midrise_rms": (MIDRISE_RMS, (64, 201), True,
                              ["rows_momentum_encode"]),
    "blockwise_midrise_rms_group": (MIDRISE_RMS, (33, 60), False,
                                    ["group_momentum_encode"]),
    "blockwise_midrise_rms_stochastic": (F.Blockwise(
        bits=2, codebook="midrise", clip_rms=1.5, block_size=128,
        rounding="stochastic"), (40, 300), False, ["rows_momentum_encode"]),
    "subspace_lowbit_2bit": (F.Subspace(
        rank_divisor=20, factors=F.Blockwise(bits=8, block_size=128),
        residual=MIDRISE_RMS), (256, 200), True,
        ["rows_momentum_store", "rows_input_encode"]),
}


def _step(impl: str, normalize: bool):
  def step(stored, g):
    return kernels.momentum_step(
        stored, g, beta=0.95, accumulation="sum", normalize=normalize,
        nesterov=True, count=jnp.asarray(3, jnp.int32),
        key=jax.random.key(0), impl=impl)
  return step


def _export(fn, platforms, *args) -> str:
  exported = jax.export.export(
      jax.jit(fn), platforms=platforms,
      disabled_checks=kernels.export_disabled_checks())(*args)
  return exported.mlir_module()


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_lowers(name, platform):
  fmt, shape, normalize, expected = CASES[name]
  text = _export(_step("pallas", normalize), [platform], fmt.init(shape),
                 jnp.ones(shape, jnp.bfloat16))
  assert CUSTOM_CALLS[platform] in text
  found = set(re.findall(r"quantmuon_(\w+?)\b", text))
  assert set(expected) <= found, found


def test_auto_exported_from_cpu_carries_the_kernel():
  tx = qm.muon_8bit(0.01)  # impl="auto"
  params = {"w": jnp.zeros((64, 4096))}
  grads = {"w": jnp.ones((64, 4096))}
  state = tx.init(params)
  for platform, call in CUSTOM_CALLS.items():
    assert call in _export(tx.update, [platform], grads, state, params)


def test_auto_exported_for_several_platforms_carries_each_kernel():
  tx = qm.muon_8bit(0.01)
  params = {"w": jnp.zeros((64, 256))}
  state = tx.init(params)
  text = _export(tx.update, ["cpu", "tpu", "cuda"], params, state, params)
  assert all(call in text for call in CUSTOM_CALLS.values())


def test_auto_lowered_for_the_cpu_traces_no_kernel(monkeypatch):
  """Only the lowering platform's function is traced: a program for the
  CPU never builds a kernel (platform_dependent traced them all)."""
  def no_kernel(*args, **kwargs):
    raise AssertionError("a kernel was traced")

  monkeypatch.setattr(kernels.dispatch, "family", no_kernel)
  tx = qm.muonq(0.01)
  params = {"w": jnp.zeros((64, 64))}
  jax.jit(tx.update).lower(params, tx.init(params), params)


@pytest.mark.parametrize("impl", ["auto", "pallas_interpret"])
def test_vmap_of_the_kernel_path_is_a_loop(impl):
  tx = qm.muon_8bit(0.01, impl=impl)
  params = {"w": jnp.zeros((64, 64))}
  state = tx.init(params)
  gs = jax.random.normal(jax.random.key(0), (2, 64, 64))

  def update(g):
    return tx.update({"w": g}, state, params)

  mapped = jax.jit(jax.vmap(update))(gs)
  for i, g in enumerate(gs):
    one = jax.jit(update)(g)
    assert jax.tree.all(jax.tree.map(
        lambda a, b, i=i: bool(jnp.all(a[i] == b)), mapped, one))


def test_vmap_exported_carries_the_kernel():
  """A mapped update lowered for an accelerator maps its kernel."""
  tx = qm.muon_8bit(0.01)
  params = {"w": jnp.zeros((64, 64))}
  state = tx.init(params)
  update = jax.vmap(lambda g: tx.update({"w": g}, state, params))
  for platform, call in CUSTOM_CALLS.items():
    assert call in _export(update, [platform], jnp.ones((2, 64, 64)))


def test_auto_on_cpu_is_the_xla_path():
  fmt, shape, _, _ = CASES["grid_4bit"]
  stored, g = fmt.init(shape), jnp.ones(shape)
  text = jax.jit(_step("auto", False)).lower(stored, g).as_text()
  assert "custom_call" not in text and "quantmuon_" not in text
  auto = jax.jit(_step("auto", False))(stored, g)
  xla = jax.jit(_step("xla", False))(stored, g)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)),
                                   auto, xla))


@pytest.mark.parametrize("preset, pipeline", [
    (qm.muon_8bit, "leafwise"),
    # A Subspace leaf's gradient compiles for about 10 s.
    pytest.param(qm.muonq, "chain", marks=pytest.mark.slow)])
def test_grad_through_auto_is_the_xla_gradient(preset, pipeline):
  """``jax.grad`` of a function of the update (meta-learning does this):
  platform_dependent used to differentiate the Pallas branches too and
  fail ("Linearization failed ..."), even on the CPU. The gradients
  agree to rounding: XLA fuses the two programs differently. Two leaves,
  since the chain orders the second leaf after the first's encode."""
  params = {"a": jnp.zeros((32, 64)), "b": jnp.zeros((32, 64))}
  grads = {name: jax.random.normal(jax.random.key(i), (32, 64))
           for i, name in enumerate(params)}
  weights = jax.random.normal(jax.random.key(2), (32, 64))

  def grad_of(impl):
    tx = preset(0.01, impl=impl, pipeline=pipeline, min_size=0)
    state = tx.init(params)

    def loss(grads):
      updates, _ = tx.update(grads, state, params)
      return jnp.sum((updates["a"] + 2 * updates["b"]) * weights)

    if impl == "auto":  # the kernel path is taken
      assert "quantmuon_momentum_step" in str(jax.make_jaxpr(loss)(grads))
    return jax.jit(jax.grad(loss))(grads)

  want = grad_of("xla")
  got = grad_of("auto")
  for name in params:
    assert bool(jnp.all(jnp.isfinite(want[name])))
    assert bool(jnp.any(want[name] != 0))
    np.testing.assert_allclose(
        got[name], want[name], rtol=1e-5,
        atol=1e-5 * float(jnp.max(jnp.abs(want[name]))))


def test_pallas_on_cpu_points_to_interpret():
  fmt, shape, _, _ = CASES["grid_4bit"]
  with pytest.raises(ValueError, match="pallas_interpret"):
    jax.jit(_step("pallas", False))(fmt.init(shape), jnp.ones(shape))


def test_formats_without_kernels_take_xla_under_any_impl():
  for fmt in (F.Float(), F.FloatingPoint(exponent_bits=5, mantissa_bits=2)):
    text = _export(_step("pallas", False), ["tpu"], fmt.init((64, 64)),
                   jnp.ones((64, 64)))
    assert "tpu_custom_call" not in text


def test_configuration_without_kernel_raises_under_pallas():
  fmt = F.Blockwise(bits=8, codebook="unsigned_linear")
  assert kernels.unsupported_reason(fmt, (64, 64)) is not None
  with pytest.raises(ValueError, match="no kernel"):
    _export(_step("pallas", False), ["tpu"], fmt.init((64, 64)),
            jnp.ones((64, 64)))
  text = _export(_step("auto", False), ["tpu"], fmt.init((64, 64)),
                 jnp.ones((64, 64)))
  assert "tpu_custom_call" not in text


def test_impl_is_checked():
  with pytest.raises(ValueError, match="impl"):
    qm.transforms.scale_by_quantized_momentum(impl="cuda")
  with pytest.raises(ValueError, match="impl"):
    qm.muon_grasp(0.01, impl="triton")
  assert "impl" in qm.muonq.__signature__.parameters
  assert isinstance(qm.muon(0.01, impl="pallas"),
                    optax.GradientTransformationExtraArgs)
