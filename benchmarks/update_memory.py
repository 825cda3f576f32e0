"""Peak memory and compile time of every preset's update, nothing allocated.

Everything is compiled from ``jax.ShapeDtypeStruct`` trees
(``jax.eval_shape`` of ``init``), so no parameter, gradient or state buffer
is ever allocated; the numbers are XLA's ``compiled.memory_analysis()`` on
the default backend, with the momentum step on its XLA path
(``impl="xla"``).

- Update: ``jax.jit(tx.update, donate_argnums=(1,))`` (the state donated),
  lowered for ``(grads, state, params)``: state bytes, the compiled
  update's arguments, outputs, temporaries and aliased bytes, and their
  total (arguments + outputs + temporaries - aliased), with ratios to
  ``muon`` in the same run and to ``muon_chain`` (``muon`` with
  ``pipeline="chain"``, the presets before the leafwise pipeline);
  ``*_grouped`` rows run same-shape leaves in one loop
  (``pipeline="grouped"``).
  Compile time is trace + lower + compile of the update with the presets'
  default ``impl="auto"``, in wall seconds and in this process's CPU
  seconds (steadier on a shared machine).
- Scales: ``gpt2_matrices``, GPT-2 small's Muon matrices (12 blocks of
  width 768: qkv (768, 2304), o (768, 768), up (768, 3072), down (3072,
  768)); ``gpt2``, the same plus a 50304 x 768 embedding routed to AdamW;
  ``llama_1b``, TinyLlama-1.1B's shapes (22 blocks of width 2048; q, o
  (2048, 2048), k, v (2048, 256), gate, up (2048, 5632), down (5632,
  2048); embedding and head 32000 x 2048 routed to AdamW).
  ``<scale>_stacked``: the same blocks as scanned layers, one
  ``(depth, m, n)`` leaf per kind under ``blocks``, declared with
  ``stack_axes={"blocks": 0}``; its rows add ratios to the same preset
  unscanned (``total_vs_unscanned``, ``compile_cpu_vs_unscanned``).
- Momentum step: one (4096, 4096) leaf per format, the step alone
  (:func:`quantmuon.kernels.dispatch.momentum_step`, XLA path, stored
  momentum donated): its temporaries in fp32 copies of the leaf.
- Training step (``--train``): configs/gpt2_small.py's model at batch 1,
  gradient and update together, params and state donated.

Usage: python -m benchmarks.update_memory [--scales gpt2_matrices,
  gpt2_matrices_stacked]
  [--presets muon,muonq] [--train]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import quantmuon as qm
from benchmarks import common
from configs import gpt2_small
from quantmuon.kernels import dispatch
from quantmuon_experiments import model, tasks, train

PRESETS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "muon": qm.muon,
    "muon_8bit": qm.muon_8bit,
    "muon_4bit": qm.muon_4bit,
    "muonq": qm.muonq,
    "muon_grasp": qm.muon_grasp,
    "muon_lowbit": qm.muon_lowbit,
    "quantized_muon": qm.quantized_muon,
    # The composable transforms chained: the reference pipeline.
    "muon_chain": functools.partial(qm.muon, pipeline="chain"),
}
LR = 1e-3
STEP_SHAPE = (4096, 4096)
# Each format with the momentum options of the preset that stores it:
# (format or the preset whose Subspace format it is, accumulation,
# normalize, nesterov).
STEP_FORMATS = {
    "float32": (qm.formats.Float(), "ema", False, True),
    "blockwise8": (qm.formats.Blockwise(bits=8, block_size=2048), "sum",
                   False, True),
    "blockwise8_dynamic": (qm.formats.Blockwise(
        bits=8, codebook="dynamic", block_size=2048), "sum", False, True),
    "blockwise4": (qm.formats.Blockwise(bits=4, block_size=128), "sum",
                   False, False),
    "tensor4": (qm.formats.Axiswise(bits=4, axis="tensor"), "sum", False,
                False),
    "grid4": (qm.formats.Grid(bits=4), "sum", False, False),
    "muonq_subspace4": ("muonq", "sum", True, False),
    "grasp_subspace4": ("muon_grasp", "sum", False, False),
    "lowbit_subspace4": ("muon_lowbit", "sum", True, True),
}
MiB = 2 ** 20
MEMORY_KEYS = ("arguments", "outputs", "temporaries", "aliased", "total")


def _sds(shape: tuple[int, ...], dtype: Any = jnp.float32
         ) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, dtype)


def gpt2_params(embedding: bool) -> dict[str, Any]:
  """GPT-2 small's Muon matrices, optionally with its token embedding."""
  d = 768
  block = {"attn": {"qkv": {"kernel": _sds((d, 3 * d))},
                    "o": {"kernel": _sds((d, d))}},
           "mlp": {"up": {"kernel": _sds((d, 4 * d))},
                   "down": {"kernel": _sds((4 * d, d))}}}
  params: dict[str, Any] = {f"block_{i}": block for i in range(12)}
  if embedding:
    params["wte"] = {"embedding": _sds((50304, d))}
  return params


def llama_1b_params() -> dict[str, Any]:
  """TinyLlama-1.1B's parameter shapes (norm scales left out)."""
  d, kv, hidden = 2048, 256, 5632
  block = {"attn": {"q": {"kernel": _sds((d, d))},
                    "k": {"kernel": _sds((d, kv))},
                    "v": {"kernel": _sds((d, kv))},
                    "o": {"kernel": _sds((d, d))}},
           "mlp": {"gate": {"kernel": _sds((d, hidden))},
                   "up": {"kernel": _sds((d, hidden))},
                   "down": {"kernel": _sds((hidden, d))}}}
  params: dict[str, Any] = {f"block_{i}": block for i in range(22)}
  params["embed_tokens"] = {"embedding": _sds((32000, d))}
  params["lm_head"] = {"kernel": _sds((d, 32000))}
  return params


STACK_KEY = "blocks"
STACKED = "_stacked"


def stack_blocks(params: dict[str, Any]) -> dict[str, Any]:
  """The ``block_<i>`` subtrees as one subtree of ``(depth, ...)`` leaves
  under ``STACK_KEY`` (scanned layers); the other entries unchanged."""
  blocks = [params[k] for k in sorted(params, key=_block_index)
            if k.startswith("block_")]
  out = {k: v for k, v in params.items() if not k.startswith("block_")}
  out[STACK_KEY] = jax.tree.map(
      lambda *xs: _sds((len(xs), *xs[0].shape), xs[0].dtype), *blocks)
  return out


def _block_index(name: str) -> int:
  return int(name.rpartition("_")[2]) if name.startswith("block_") else -1


BASE_SCALES: dict[str, Callable[[], dict[str, Any]]] = {
    "gpt2_matrices": lambda: gpt2_params(embedding=False),
    "gpt2": lambda: gpt2_params(embedding=True),
    "llama_1b": llama_1b_params,
}
SCALES = (*BASE_SCALES, *(k + STACKED for k in BASE_SCALES))


def scale_params(scale: str) -> tuple[dict[str, Any], Any]:
  """A scale's parameter shapes and its presets' ``stack_axes``."""
  params = BASE_SCALES[scale.removesuffix(STACKED)]()
  if scale.endswith(STACKED):
    return stack_blocks(params), {STACK_KEY: 0}
  return params, None


def nbytes(tree: Any) -> int:
  """Bytes of a tree of arrays or ShapeDtypeStructs."""
  return sum(x.size * jnp.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree))


def memory(compiled: Any) -> dict[str, int]:
  """A compiled function's memory analysis, with the total.

  Args:
    compiled: ``jax.jit(f).lower(...).compile()``.

  Returns:
    ``arguments``, ``outputs``, ``temporaries``, ``aliased`` and ``total``
    (= arguments + outputs + temporaries - aliased) in bytes.
  """
  stats = compiled.memory_analysis()
  out = {"arguments": stats.argument_size_in_bytes,
         "outputs": stats.output_size_in_bytes,
         "temporaries": stats.temp_size_in_bytes,
         "aliased": stats.alias_size_in_bytes}
  out = {k: int(v) for k, v in out.items()}
  out["total"] = (out["arguments"] + out["outputs"] + out["temporaries"]
                  - out["aliased"])
  return out


def ratios_to(rows: list[dict[str, Any]], preset: str,
              fields: dict[str, str]) -> None:
  """Adds ``row[name] = row[field] / reference[field]`` to every row, for
  ``fields`` (field -> name) and the reference row of ``preset``, when
  that preset ran."""
  reference = next((r for r in rows if r["preset"] == preset), None)
  if reference is None:
    return
  for row in rows:
    for field, name in fields.items():
      row[name] = row[field] / reference[field]


def in_mib(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
  """Adds ``row[key + "_mib"]``, the byte counts ``keys`` in MiB."""
  for row in rows:
    for key in keys:
      row[f"{key}_mib"] = row[key] / MiB


def compile_update(tx: optax.GradientTransformation, params: Any
                   ) -> tuple[Any, float, Any]:
  """Compiles ``tx.update`` with the state donated.

  Args:
    tx: the optimizer.
    params: a tree of ShapeDtypeStructs (also the gradients' shapes).

  Returns:
    ``(compiled, {"compile_s": wall seconds, "compile_cpu_s": this
    process's CPU seconds} to trace, lower and compile, state shapes)``.
    JAX's caches are cleared first, so that every compile starts as a
    user's first one does: the leaf functions that presets share across
    leaves (and that stacked leaves share with unscanned ones) would
    otherwise come traced from an earlier row.
  """
  state = jax.eval_shape(tx.init, params)
  jax.clear_caches()
  wall, cpu = time.perf_counter(), time.process_time()
  compiled = jax.jit(tx.update, donate_argnums=(1,)).lower(
      params, state, params).compile()
  return compiled, {"compile_s": time.perf_counter() - wall,
                    "compile_cpu_s": time.process_time() - cpu}, state


def update_rows(scale: str, presets: list[str]) -> list[dict[str, Any]]:
  """One row per preset at ``scale``; ratios are to ``muon``'s row."""
  params, axes = scale_params(scale)
  rows = []
  for name in presets:
    compiled, _, state = compile_update(
        PRESETS[name](LR, impl="xla", stack_axes=axes), params)
    _, seconds, _ = compile_update(PRESETS[name](LR, stack_axes=axes),
                                   params)
    rows.append({"scale": scale, "preset": name, "state_bytes":
                 nbytes(state), **seconds, **memory(compiled)})
  ratios_to(rows, "muon", {"total": "total_vs_muon",
                           "compile_s": "compile_vs_muon",
                           "compile_cpu_s": "compile_cpu_vs_muon"})
  ratios_to(rows, "muon_chain", {"total": "total_vs_muon_chain"})
  in_mib(rows, ("state_bytes", *MEMORY_KEYS))
  return rows


def stacked_vs_unscanned(rows: list[dict[str, Any]]) -> None:
  """Adds to every stacked row its ratios to the same preset's row at the
  unscanned scale, when that ran."""
  plain = {(r["scale"], r["preset"]): r for r in rows}
  for row in rows:
    base = plain.get((row["scale"].removesuffix(STACKED), row["preset"]))
    if row["scale"].endswith(STACKED) and base is not None:
      row["total_vs_unscanned"] = row["total"] / base["total"]
      row["compile_cpu_vs_unscanned"] = (row["compile_cpu_s"]
                                         / base["compile_cpu_s"])


def _subspace_format(preset: str) -> qm.formats.Format:
  """The Subspace format a preset stores a (4096, 4096) leaf in."""
  params = {"w": _sds(STEP_SHAPE)}
  state = jax.eval_shape(PRESETS[preset](LR).init, params)
  stored = jax.tree.leaves(state, is_leaf=qm.formats.is_stored)
  return next(s.format for s in stored if qm.formats.is_stored(s)
              and isinstance(s.format, qm.formats.Subspace))


def step_rows() -> list[dict[str, Any]]:
  """Temporaries of one momentum step per format at ``STEP_SHAPE``."""
  g = _sds(STEP_SHAPE)
  copy = g.size * 4
  rows = []
  for name, (fmt, accumulation, normalize, nesterov) in (
      STEP_FORMATS.items()):
    if isinstance(fmt, str):
      fmt = _subspace_format(fmt)
    stored = jax.eval_shape(lambda fmt=fmt: fmt.init(STEP_SHAPE))

    def step(stored, g, count, accumulation=accumulation,
             normalize=normalize, nesterov=nesterov):
      return dispatch.momentum_step(
          stored, g, beta=0.95, accumulation=accumulation,
          normalize=normalize, nesterov=nesterov, count=count, key=None,
          impl="xla")

    compiled = jax.jit(step, donate_argnums=(0,)).lower(
        stored, g, _sds((), jnp.int32)).compile()
    mem = memory(compiled)
    rows.append({"format": name, "temporaries": mem["temporaries"],
                 "temporaries_mib": round(mem["temporaries"] / MiB, 3),
                 "fp32_copies": round(mem["temporaries"] / copy, 3)})
  return rows


def train_rows(presets: list[str]) -> list[dict[str, Any]]:
  """The whole training step of configs/gpt2_small.py's model, batch 1."""
  mc = gpt2_small.get_config().model
  config = model.GPTConfig(
      vocab_size=mc.vocab_size, context=mc.context, width=mc.width,
      depth=mc.depth, heads=mc.heads, mlp_ratio=mc.mlp_ratio,
      tied_head=mc.tied_head)
  net = nnx.eval_shape(lambda: model.GPT(config, nnx.Rngs(0)))
  graphdef, params = nnx.split(net, nnx.Param)
  params = nnx.to_pure_dict(params)
  batch = {"tokens": _sds((1, mc.context + 1), jnp.int32)}
  rows = []
  for name in presets:
    tx = PRESETS[name](LR, impl="xla")
    state = jax.eval_shape(tx.init, params)
    step = train.make_step(graphdef, tasks.lm_loss, tx)
    compiled = step.lower(params, state, batch).compile()
    rows.append({"preset": name, **memory(compiled)})
  ratios_to(rows, "muon", {"total": "total_vs_muon"})
  ratios_to(rows, "muon_chain", {"total": "total_vs_muon_chain"})
  in_mib(rows, MEMORY_KEYS)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      "--scales", default="gpt2_matrices,gpt2_matrices_stacked,gpt2,"
      "llama_1b,llama_1b_stacked", help=f"some of {', '.join(SCALES)}")
  parser.add_argument("--presets", default=",".join(PRESETS))
  parser.add_argument("--train", action="store_true")
  args = parser.parse_args()
  presets = args.presets.split(",")
  rows = [row for scale in args.scales.split(",")
          for row in update_rows(scale, presets)]
  stacked_vs_unscanned(rows)
  steps = step_rows()
  common.print_table(steps, ["format", "temporaries_mib", "fp32_copies"],
                     title=f"== momentum step at {STEP_SHAPE} ==")
  trains = train_rows(presets) if args.train else []
  if trains:
    common.print_table(trains, [
        "preset", "arguments_mib", "outputs_mib", "temporaries_mib",
        "aliased_mib", "total_mib", "total_vs_muon", "total_vs_muon_chain"],
        title="== training step, configs/gpt2_small.py, batch 1 ==")
  common.report("update_memory", rows, columns=[
      "scale", "preset", "state_bytes_mib", "arguments_mib", "outputs_mib",
      "temporaries_mib", "aliased_mib", "total_mib", "total_vs_muon",
      "total_vs_muon_chain", "total_vs_unscanned", "compile_s",
      "compile_cpu_s", "compile_vs_muon", "compile_cpu_vs_muon",
      "compile_cpu_vs_unscanned"],
      meta={"lr": LR, "step_shape": STEP_SHAPE, "momentum_step": steps,
            "train_step": trains})


if __name__ == "__main__":
  main()
