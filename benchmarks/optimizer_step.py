"""Optimizer-step cost of every preset against ``optax.contrib.muon``.

On a GPT-like parameter tree (4 layers; q, k, v, o, fc1, fc2 matrices;
embeddings, head and norms routed to AdamW in every optimizer), at weight
decay 0, with the layers as separate leaves (``unscanned``) or stacked into
``(4, m, n)`` leaves as a scanned model holds them (``stacked``: the
presets get ``stack_axes``, ``optax.contrib.muon`` the layer axis as a
batch axis), measured in one run:

- state bytes per matrix parameter (Muon leaves only) and the reduction
  against full-precision Muon;
- optimizer-step time as a ratio to ``optax.contrib.muon``: every
  optimizer is timed once per round (the fastest of ``--repeats`` steps),
  the rounds interleaved, and each round's ratio to that round's
  ``optax.contrib.muon``; the table gives the median ratio over the rounds
  with its min-max, so load on a shared machine shows as spread;
- compiled step memory (arguments + outputs + temporaries, from XLA's
  memory analysis) as a ratio to ``optax.contrib.muon``.

Usage: python -m benchmarks.optimizer_step [--widths 256,512]
  [--layouts unscanned,stacked] [--repeats 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import quantmuon as qm
from benchmarks import common
from quantmuon_experiments import timing

PRESETS = {
    "muon": qm.muon,
    "muon_8bit": qm.muon_8bit,
    "muon_8bit_dynamic": lambda lr, **kw: qm.muon_8bit(
        lr, scheme="dynamic", **kw),
    "muon_4bit": qm.muon_4bit,
    "muonq": qm.muonq,
    "muon_grasp": qm.muon_grasp,
    "muon_lowbit": qm.muon_lowbit,
}
LAYOUTS = ("unscanned", "stacked")
STACK_KEY = "blocks"


def gpt_params(width: int, layers: int = 4, vocab: int = 4096,
               stacked: bool = False) -> dict:
  """A GPT-like parameter tree (float32 zeros are enough for timing).

  Args:
    width: model width d (attention d x d, MLP d x 4d and 4d x d).
    layers: number of blocks.
    vocab: rows of the embedding and columns of the head.
    stacked: the blocks as one subtree of ``(layers, ...)`` leaves under
      ``STACK_KEY`` instead of ``block_<i>`` subtrees.

  Returns:
    The parameter tree, one buffer per leaf.
  """
  d = width
  lead = (layers,) if stacked else ()
  block = {
      "attn": {name: {"kernel": jnp.zeros((*lead, d, d))}
               for name in ("query", "key", "value", "out")},
      "mlp": {"fc1": {"kernel": jnp.zeros((*lead, d, 4 * d))},
              "fc2": {"kernel": jnp.zeros((*lead, 4 * d, d))}},
      "ln1": {"scale": jnp.ones((*lead, d))},
      "ln2": {"scale": jnp.ones((*lead, d))},
  }
  if stacked:
    params = {STACK_KEY: block}
  else:
    params = {f"block_{i}": block for i in range(layers)}
  params["embed"] = {"embedding": jnp.zeros((vocab, d))}
  params["lm_head"] = {"kernel": jnp.zeros((d, vocab))}
  return jax.tree.map(jnp.array, params)  # distinct buffers per leaf


def optax_muon(labels, stacked: bool) -> optax.GradientTransformation:
  """``optax.contrib.muon`` on the Muon-labelled leaves; a stacked leaf's
  layer axis (0) is a batch axis, its last two the matrix."""
  axes = optax.contrib.MuonDimensionNumbers(
      reduction_axis=1, output_axis=2) if stacked else (
          optax.contrib.MuonDimensionNumbers())
  dims = jax.tree.map(lambda label: axes if label == "muon" else None,
                      labels)
  return optax.contrib.muon(1e-3, adam_b2=0.95,
                            muon_weight_dimension_numbers=dims)


class Measured(NamedTuple):
  """One optimizer's compiled step, its memory and its state."""

  step: Any
  memory_bytes: int
  state: Any


def compile_step(tx: optax.GradientTransformation, params: dict,
                 grads: dict) -> Measured:
  """Compiles one optimizer step and reads its memory analysis."""
  state = tx.init(params)
  compiled = jax.jit(tx.update).lower(grads, state, params).compile()
  mem = compiled.memory_analysis()
  memory = (mem.argument_size_in_bytes + mem.output_size_in_bytes
            + mem.temp_size_in_bytes)
  return Measured(compiled, int(memory), state)


def interleaved_times(steps: dict[str, Measured], params: dict,
                      grads: dict, repeats: int, rounds: int
                      ) -> dict[str, list[float]]:
  """Per optimizer, the fastest of ``repeats`` steps in each of ``rounds``
  rounds; within a round every optimizer runs once, in turn."""
  states = {name: m.state for name, m in steps.items()}
  times: dict[str, list[float]] = {name: [] for name in steps}
  for _ in range(rounds):
    for name, m in steps.items():
      seconds, states[name] = common.fastest_step(
          m.step, grads, states[name], params, repeats)
      times[name].append(seconds)
  return times


def muon_state_bytes(state, labels) -> int:
  """Bytes of the Muon branch's state (momentum of the matrix leaves)."""
  inner = state.inner_states["muon"].inner_state
  return qm.nbytes(inner)


def run(widths: list[int], layouts: list[str], repeats: int, rounds: int
        ) -> list[dict]:
  """Measures every preset against ``optax.contrib.muon``.

  Args:
    widths: model widths.
    layouts: some of :data:`LAYOUTS`.
    repeats: steps per timing (the fastest counts).
    rounds: interleaved rounds per optimizer.

  Returns:
    One row per width, layout and preset.
  """
  rows = []
  for width, layout in ((w, lay) for w in widths for lay in layouts):
    stacked = layout == "stacked"
    stack_axes = {STACK_KEY: 0} if stacked else None
    params = gpt_params(width, stacked=stacked)
    labels = qm.muon_labels(params, stack_axes=stack_axes)
    grads = jax.tree.map(
        lambda p: jax.random.normal(jax.random.key(p.size), p.shape), params)
    n_matrix = sum(p.size for p, label in zip(
        jax.tree.leaves(params), jax.tree.leaves(labels), strict=True)
        if label == "muon")
    steps = {"optax_muon": compile_step(optax_muon(labels, stacked),
                                        params, grads)}
    steps.update({name: compile_step(make(1e-3, stack_axes=stack_axes),
                                     params, grads)
                  for name, make in PRESETS.items()})
    times = interleaved_times(steps, params, grads, repeats, rounds)
    reference = times["optax_muon"]
    full = muon_state_bytes(steps["muon"].state, labels)
    for name in PRESETS:
      state_bytes = muon_state_bytes(steps[name].state, labels)
      ratio = timing.paired_ratios(times[name], reference)
      rows.append({
          "width": width,
          "layout": layout,
          "optimizer": name,
          "state_bytes_per_matrix_param": state_bytes / n_matrix,
          "state_reduction_vs_muon": full / state_bytes,
          "step_time_ratio": ratio["median"],
          "step_time_ratio_min": ratio["min"],
          "step_time_ratio_max": ratio["max"],
          "step_memory_ratio": steps[name].memory_bytes
          / steps["optax_muon"].memory_bytes,
          "step_s": float(np.median(times[name])),
          "step_memory_bytes": steps[name].memory_bytes,
          "optax_muon_step_s": float(np.median(reference)),
          "optax_muon_memory_bytes": steps["optax_muon"].memory_bytes,
      })
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--widths", default="256,512")
  parser.add_argument("--layouts", default=",".join(LAYOUTS),
                      help=f"some of {', '.join(LAYOUTS)}")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args()
  layouts = args.layouts.split(",")
  unknown = sorted(set(layouts) - set(LAYOUTS))
  if unknown:
    parser.error(f"--layouts: unknown {unknown}; use some of {LAYOUTS}")
  rows = run([int(w) for w in args.widths.split(",")], layouts,
             args.repeats, args.rounds)
  common.report("optimizer_step", rows, columns=[
      "width", "layout", "optimizer", "state_bytes_per_matrix_param",
      "state_reduction_vs_muon", "step_time_ratio", "step_time_ratio_min",
      "step_time_ratio_max", "step_memory_ratio"],
      meta={"repeats": args.repeats, "rounds": args.rounds})


if __name__ == "__main__":
  main()
