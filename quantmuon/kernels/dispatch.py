"""Which implementation runs a momentum step: ``impl``.

- ``xla``: the jnp path (:func:`quantmuon.momentum_op.reference`).
- ``pallas``: always the fused kernel: Mosaic on TPU, Triton on GPU. Lowered
  for the CPU it fails, naming ``pallas_interpret``.
- ``pallas_interpret``: the same kernel (the GPU driver's) in interpret
  mode, on any backend: slow, for tests.
- ``auto``: the kernel when lowering for TPU or GPU, XLA for the CPU. The
  choice is made when the program is lowered, not on the host, so a
  program exported from a CPU machine for a TPU carries the kernel.

The kernel paths are one primitive whose lowering rule is registered per
platform and traces only the function of the platform being lowered: a
program for the CPU never traces a Pallas kernel, and a multi-platform
export (``platforms=["cpu", "tpu", "cuda"]``) lowers each platform's own
function. Differentiating it differentiates the XLA reference, which the
kernels equal bit for bit, so ``jax.grad`` goes through every ``impl``;
``jax.vmap`` maps each platform's function.

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

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.extend import core as jex_core
from jax.interpreters import ad, batching, mlir

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


_NO_CPU_MESSAGE = (
    "impl='pallas' emits a Pallas kernel (Mosaic on TPU, Triton on GPU), "
    "which cannot run on the CPU. Use impl='pallas_interpret' to run the "
    "same kernel in interpret mode, or impl='auto' (XLA on the CPU) or "
    "impl='xla'.")
_LOWERING_PLATFORMS = ("cpu", "tpu", "cuda", "rocm")

# The kernel path of a step: one primitive whose lowering rule, registered
# per platform, traces only the lowering platform's function. So the
# Pallas kernels are traced only when lowered for TPU or GPU (a program
# for the CPU never traces them), and a program exported for a TPU from a
# CPU machine still carries the kernel. Its JVP is the XLA reference's.
_step_p = jex_core.Primitive("quantmuon_momentum_step")
_step_p.multiple_results = True


def _rule(rules: tuple[tuple[str, Callable[..., Any]], ...], platform: str
          ) -> Callable[..., Any]:
  """The function of ``rules`` for ``platform``, else its ``default``."""
  table = dict(rules)
  return table.get(platform, table["default"])


def _default_platform() -> str:
  """The platform an eager step runs on, named as lowering names it."""
  platform = jax.default_backend()
  return "cuda" if platform == "gpu" else platform


_step_p.def_abstract_eval(lambda *args, rules, reference, out_avals: list(
    out_avals))
_step_p.def_impl(lambda *args, rules, reference, out_avals: _rule(
    rules, _default_platform())(*args))


def _lowering(platform: str) -> Callable[..., Any]:
  """The lowering rule of ``_step_p`` for ``platform``."""
  def lower(ctx: Any, *args: Any, rules, reference, out_avals) -> Any:
    del reference, out_avals
    return mlir.lower_fun(_rule(rules, platform),
                          multiple_results=True)(ctx, *args)
  return lower


mlir.register_lowering(_step_p, _lowering("default"))
for _platform in _LOWERING_PLATFORMS:
  mlir.register_lowering(_step_p, _lowering(_platform), platform=_platform)


def _step_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...], *,
              rules: Any, reference: Callable[..., Any], out_avals: Any
              ) -> tuple[Any, Any]:
  """The JVP of the XLA reference, which every rule equals."""
  del rules, out_avals
  tangents = tuple(ad.instantiate_zeros(t) for t in tangents)
  return jax.jvp(reference, tuple(primals), tangents)


def _step_batch(args: tuple[Any, ...], dims: tuple[int | None, ...], *,
                rules: Any, reference: Callable[..., Any], out_avals: Any
                ) -> tuple[Any, list[int]]:
  """``_step_p`` of every rule ``jax.vmap``-ed, outputs mapped on axis 0."""
  del out_avals
  in_axes = list(dims)  # None where not mapped
  batched = [(name, jax.vmap(fn, in_axes=in_axes)) for name, fn in rules]
  reference = jax.vmap(reference, in_axes=in_axes)
  out_avals = tuple(jax.typeof(x) for x in jax.eval_shape(reference, *args))
  outs = _step_p.bind(*args, rules=tuple(batched), reference=reference,
                      out_avals=out_avals)
  return outs, [0] * len(outs)


ad.primitive_jvps[_step_p] = _step_jvp
batching.primitive_batchers[_step_p] = _step_batch


def _by_platform(rules: dict[str, Callable[..., Any]],
                 reference: Callable[..., Any], out_like: Any, *args: Any
                 ) -> Any:
  """``rules[platform](*args)`` for the platform the program is lowered
  for (``rules["default"]`` for a platform not named), differentiated as
  ``reference(*args)``.

  Each function returns a pytree of the structure and types of
  ``out_like``. Array leaves of ``args`` are the primitive's operands;
  other leaves (Python numbers) stay constants of each function, as they
  would be called directly.
  """
  leaves, in_tree = jax.tree.flatten(args)
  is_array = [isinstance(x, jax.Array | np.ndarray) for x in leaves]

  def flat(fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*operands: Any) -> list[Any]:
      given = iter(operands)
      full = [next(given) if a else x
              for x, a in zip(leaves, is_array, strict=True)]
      return jax.tree.leaves(fn(*jax.tree.unflatten(in_tree, full)))
    return run

  out_avals = tuple(jax.typeof(x).update(weak_type=False)
                    for x in jax.tree.leaves(out_like))
  outs = _step_p.bind(
      *[x for x, a in zip(leaves, is_array, strict=True) if a],
      rules=tuple((name, flat(fn)) for name, fn in rules.items()),
      reference=flat(reference), out_avals=out_avals)
  return jax.tree.unflatten(jax.tree.structure(out_like), outs)


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

  def reference(stored, g, beta, count, key):
    return momentum_op.reference(stored, g, beta=beta, cfg=cfg, count=count,
                                 key=key)

  args = (stored, g, beta, count, key)
  if impl == "xla" or not has_kernel_family(stored.format, stored.shape):
    return reference(*args)
  if impl == "auto" and _on_mesh(g):
    return reference(*args)
  reason = unsupported_reason(stored.format, stored.shape)
  if reason is not None:
    if impl == "auto":
      return reference(*args)
    raise ValueError(
        f"impl={impl!r}: no kernel for {stored.format!r} at shape "
        f"{stored.shape}: {reason} Use impl='auto' or 'xla'.")

  def kernel(backend: str, interpret: bool = False):
    def run(stored, g, beta, count, key):
      scalars = absmax.scalars(stored, g, beta=beta, cfg=cfg, count=count)
      fused = family(stored.format, stored.shape)
      return fused(stored, g, cfg=cfg, step_scalars=scalars, key=key,
                   backend=backend, interpret=interpret)
    return run

  def no_cpu(*args):
    del args
    raise ValueError(_NO_CPU_MESSAGE)

  if impl == "pallas_interpret":
    rules = {"default": kernel("gpu", interpret=True)}
  else:
    rules = {"tpu": kernel("tpu"), "default": kernel("gpu"),
             "cpu": reference if impl == "auto" else no_cpu}
  # The step returns the fresh momentum (typed like g) and the stored
  # momentum (typed like the stored momentum it replaces).
  return _by_platform(rules, reference, (g, stored), *args)
