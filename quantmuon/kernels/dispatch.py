"""Which implementation runs a momentum step: ``impl``.

- ``xla``: the jnp path (:func:`quantmuon.momentum_op.reference`).
- ``pallas``: always the fused kernel: Mosaic on TPU, Triton on GPU. Lowered
  for the CPU it fails, naming ``pallas_interpret``.
- ``pallas_interpret``: the same kernel (the GPU driver's) in interpret
  mode, on any backend: slow, for tests.
- ``auto``: the kernel when lowering for TPU or GPU, XLA for the CPU. The
  choice is made by ``jax.lax.platform_dependent`` when the program is
  lowered, not on the host, so a program exported from a CPU machine for a
  TPU carries the kernel.

Export for one platform at a time. ``jax.lax.platform_dependent`` prunes
the branches of other platforms but lowers each kept branch for every
platform of the export, so with ``platforms=["tpu", "cuda"]`` the Mosaic
kernel is also lowered for CUDA and fails ("Compiler params for platform
tpu cannot be used for gpu lowering"); with "cpu" next to an accelerator,
Pallas fails with "Only interpret mode is supported on CPU backend",
although the CPU branch holds no kernel.

Formats without a kernel (``Float``, ``FloatingPoint``) take the XLA path
whatever ``impl`` says: there is nothing to fall back from. In a family
with kernels, the few configurations :func:`unsupported_reason` names
(unsigned codebooks, Grid tiles over 128, blocks that split a byte, ...)
take the XLA path under ``auto`` and raise under ``pallas`` and
``pallas_interpret``; every other configuration runs its kernel and never
falls back.

The kernels are per-device programs, not yet wrapped in ``shard_map``: a
gradient whose type carries a mesh of several devices (sharded under
``jit``) takes the XLA path under ``auto``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
from jax.extend import core as jex_core
from jax.interpreters import batching, mlir

from quantmuon import formats, momentum_op
from quantmuon.formats.base import check_choice
from quantmuon.formats.kernel_layout import Factored
from quantmuon.kernels import absmax, geometry, subspace
from quantmuon.kernels.gpu import TRITON_CALL

Array = jax.Array
#: The values of ``impl``: how a momentum step runs.
IMPLS = ("auto", "xla", "pallas", "pallas_interpret")


def has_kernel_family(fmt: formats.Format, shape: tuple[int, ...]) -> bool:
  """Whether ``fmt`` belongs to a family with fused kernels.

  A format with a kernel layout (``Format.kernel_layout``) does, a
  factored one when its residual has a layout; ``Float`` and
  ``FloatingPoint`` do not, and always take the XLA path.
  """
  return fmt.kernel_layout(shape) is not None


def unsupported_reason(fmt: formats.Format, shape: tuple[int, ...]
                       ) -> str | None:
  """Why a kernel family has no kernel for ``fmt`` at ``shape``, or None."""
  try:
    geometry.of(fmt, shape)
  except geometry.Unsupported as err:
    return str(err)
  return None


def family(fmt: formats.Format, shape: tuple[int, ...]) -> Callable[..., Any]:
  """The fused step of ``fmt``'s layout: :func:`subspace.step` for a
  ``Factored`` layout, else :func:`absmax.step` (same arguments)."""
  factored = isinstance(fmt.kernel_layout(shape), Factored)
  return subspace.step if factored else absmax.step


def export_disabled_checks() -> list[Any]:
  """``disabled_checks`` that ``jax.export`` needs for the GPU kernels.

  Triton's custom call has no serialization stability guarantee, so
  ``jax.export.export(..., platforms=["cuda"], disabled_checks=...)`` must
  accept it explicitly. TPU kernels (``tpu_custom_call``) need nothing.
  """
  return [jax.export.DisabledSafetyCheck.custom_call(TRITON_CALL)]


_accelerator_p = jex_core.Primitive("quantmuon_needs_accelerator")
_accelerator_p.def_abstract_eval(lambda x: x)
_accelerator_p.def_impl(lambda x: x)
_NO_CPU_MESSAGE = (
    "impl='pallas' emits a Pallas kernel (Mosaic on TPU, Triton on GPU), "
    "which cannot run on the CPU. Use impl='pallas_interpret' to run the "
    "same kernel in interpret mode, or impl='auto' (XLA on the CPU) or "
    "impl='xla'.")


def _no_cpu_lowering(ctx: Any, x: Any) -> Any:
  del ctx, x
  raise ValueError(_NO_CPU_MESSAGE)


mlir.register_lowering(_accelerator_p, lambda ctx, x: [x])
mlir.register_lowering(_accelerator_p, _no_cpu_lowering, platform="cpu")
batching.primitive_batchers[_accelerator_p] = (
    lambda args, dims: (_accelerator_p.bind(*args), dims[0]))


def _on_mesh(x: Array) -> bool:
  """Whether ``x``'s type carries a mesh of several devices."""
  mesh = getattr(getattr(jax.typeof(x), "sharding", None), "mesh", None)
  return mesh is not None and not mesh.empty and mesh.size > 1


def momentum_step(stored: formats.Stored, g: Array, *, beta: Any,
               accumulation: str, normalize: bool, nesterov: bool,
               count: Array, key: Array | None, impl: str = "auto"
               ) -> tuple[Array, formats.Stored]:
  """One leaf's momentum step by ``impl``.

  Args:
    stored: the stored momentum.
    g: the gradient.
    beta: momentum decay.
    accumulation: ``ema`` or ``sum``.
    normalize: MuonQ's normalization.
    nesterov: emit the Nesterov mix.
    count: the step count (after incrementing).
    key: key for stochastic rounding, or None.
    impl: one of ``IMPLS``.

  Returns:
    ``(fresh momentum in g's dtype, new stored momentum)``.

  Raises:
    ValueError: for an unknown ``impl``, or ``pallas`` /
      ``pallas_interpret`` with a format that has no kernel.
  """
  check_choice(impl, "impl", IMPLS)
  cfg = momentum_op.Config(accumulation, normalize, nesterov)
  reference = functools.partial(momentum_op.reference, stored, g, beta=beta,
                                cfg=cfg, count=count, key=key)
  if impl == "xla" or not has_kernel_family(stored.format, stored.shape):
    return reference()
  if impl == "auto" and _on_mesh(g):
    return reference()
  reason = unsupported_reason(stored.format, stored.shape)
  if reason is not None:
    if impl == "auto":
      return reference()
    raise ValueError(
        f"impl={impl!r}: no kernel for {stored.format!r} at shape "
        f"{stored.shape}: {reason} Use impl='auto' or 'xla'.")

  def kernel(backend: str, interpret: bool, guard: bool = False):
    def run():
      g_ = _accelerator_p.bind(g) if guard else g
      scalars = absmax.scalars(stored, g_, beta=beta, cfg=cfg, count=count)
      fused = family(stored.format, stored.shape)
      return fused(stored, g_, cfg=cfg, step_scalars=scalars, key=key,
                   backend=backend, interpret=interpret)
    return run

  if impl == "pallas_interpret":
    return kernel("gpu", True)()
  # One callable for CUDA and ROCm: platform_dependent traces each distinct
  # branch, and the CPU takes the default branch, traced once.
  gpu_kernel = kernel("gpu", False)
  if impl == "pallas":
    return jax.lax.platform_dependent(
        tpu=kernel("tpu", False), cuda=gpu_kernel, rocm=gpu_kernel,
        default=kernel("gpu", False, guard=True))
  return jax.lax.platform_dependent(
      tpu=kernel("tpu", False), cuda=gpu_kernel, rocm=gpu_kernel,
      default=reference)
