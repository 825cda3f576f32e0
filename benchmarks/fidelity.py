"""Update fidelity: each preset's update against its full-precision twin's.

Both optimizers see the same gradient sequence; each step's update of the
quantized preset is compared with the twin's by cosine similarity, so the
quantization error that the stored momentum carries into later steps shows
up as it accumulates. Three sources of gradients:

- ``synthetic``: 30 steps of a 256 x 512 gradient made of a slowly drifting
  rank-8 signal plus unit Gaussian noise (the signal's Frobenius norm a
  quarter of the noise's; seeded);
- ``gpt``: gradients of two matrices of the small GPT of
  ``configs/compare_full.py`` (an MLP ``fc`` kernel and an attention ``query``
  kernel), captured over steps 40-79 of a full-precision Muon run;
- ``gpt512``: the same two kernels of block 1 of that GPT at width 512 and
  depth 4 (12.6M parameters; 512 x 2048 and 512 x 512), batch 8, captured
  over steps 100-139 of a full-precision Muon run (about 1.8 s a step on
  2 CPU cores, two thirds of it Newton-Schulz). Captured gradients are
  cached as ``.npz`` files (200 MB for gpt512) under ``--cache`` (the
  system's temporary directory by default), so a rerun skips the training;
  delete a file to capture it again. A fresh run of every preset and
  source took 7.6 minutes on 2 quiet CPU cores (4.5 of them capturing),
  a rerun from the cache 3 minutes.

Each row gives the minimum and mean cosine over all steps and from update
:data:`SETTLED` on (the first updates come from a momentum of one or a few
gradients, where the twin's is mostly noise), and the bytes the preset
stores per parameter of that matrix (``quantmuon.nbytes`` of its state).
A preset is named as registered (``muon_lowbit``) or with options
(``muon_lowbit:rank_divisor=8:group_size=32``). The record keeps its rows
of the presets and sources not run.

Usage: python -m benchmarks.fidelity [--presets muonq,muon_grasp]
  [--sources gpt512] [--cache DIR] [--no-record]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import quantmuon as qm
from benchmarks import common
from quantmuon import registry
from quantmuon_experiments import defaults, optimizers, tasks

LR = 1e-2
#: Cosines from this update on (counting from 0) are the settled ones.
SETTLED = 10
PRESETS: dict[str, registry.Variant] = {
    "muon_8bit": registry.QUANTIZED["muon_8bit"],
    "muon_8bit_dynamic": registry.QUANTIZED["muon_8bit_dynamic"],
    "muon_4bit": registry.QUANTIZED["muon_4bit"],
    "muonq": registry.QUANTIZED["muonq"],
    "muonq_after_scale": registry.Variant(qm.muonq,
                                          {"companding": "after_scale"}),
    "muon_grasp": registry.QUANTIZED["muon_grasp"],
    "muon_lowbit": registry.QUANTIZED["muon_lowbit"],
    "muon_lowbit_2bit": registry.QUANTIZED["muon_lowbit_2bit"],
    "muon_lowbit_2bit_budget": optimizers.ABLATIONS[
        "muon_lowbit_2bit_budget"],
    "muon_lowbit_r8": optimizers.ABLATIONS["muon_lowbit_rank8"],
    "muon_lowbit_g64": registry.Variant(qm.muon_lowbit, {"group_size": 64}),
    "muon_8bit_b64_bf16": optimizers.ABLATIONS["muon_8bit_block64"],
}
#: The kind of each captured leaf.
KINDS = {"fc": "mlp", "query": "attention", "w": "synthetic"}
Gradients = list[dict[str, np.ndarray]]


def variant(spec: str) -> registry.Variant:
  """The preset variant a name or ``name:key=value:...`` spec stands for.

  Args:
    spec: a key of :data:`PRESETS`, optionally followed by options whose
      values are Python literals (``muon_lowbit:rank_divisor=8``).

  Returns:
    The variant, its options added to the named one's.

  Raises:
    ValueError: for an unknown name or an option that is not
      ``key=literal``.
  """
  name, *pairs = spec.split(":")
  if name not in PRESETS:
    raise ValueError(f"fidelity: unknown preset {name!r} in --presets; "
                     f"choose from {sorted(PRESETS)}.")
  fixed = dict(PRESETS[name].fixed)
  for pair in pairs:
    key, eq, value = pair.partition("=")
    try:
      fixed[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      eq = ""
    if not eq or not key:
      raise ValueError(f"fidelity: option {pair!r} of {spec!r} is not "
                       "key=literal, e.g. rank_divisor=8.")
  return registry.Variant(PRESETS[name].preset, fixed)


def synthetic_gradients(steps: int = 30, shape: tuple[int, int] = (256, 512),
                        rank: int = 8, drift: float = 0.02,
                        signal: float = 0.25, seed: int = 0) -> Gradients:
  """A rank-``rank`` signal whose singular vectors drift, plus unit noise.

  The signal's Frobenius norm is ``signal`` times the noise's; its singular
  vectors move by about ``drift`` (relative) a step.

  Returns:
    One ``{"w": gradient}`` a step.
  """
  rng = np.random.default_rng(seed)
  m, n = shape
  u, v = rng.standard_normal((m, rank)), rng.standard_normal((n, rank))
  sigma = np.geomspace(1.0, 0.2, rank)
  grads = []
  for _ in range(steps):
    u = u + drift * rng.standard_normal((m, rank))
    v = v + drift * rng.standard_normal((n, rank))
    low_rank = (u * sigma) @ v.T
    low_rank *= signal * np.sqrt(m * n) / np.linalg.norm(low_rank)
    grads.append({"w": (low_rank + rng.standard_normal(shape)
                        ).astype(np.float32)})
  return grads


@dataclasses.dataclass(frozen=True)
class Capture:
  """Which gradients of which GPT a capture records.

  The GPT and data are those of ``configs/compare_full.py`` with the
  model's shape and the batch size below; full-precision consistent-RMS
  Muon (the quantized presets' twin) trains it with a warmup-cosine rate.

  Attributes:
    width: the model's width.
    depth: its blocks.
    heads: attention heads.
    batch_size: windows a step.
    first: the first captured step (counting from 0).
    last: one past the last captured step.
    block: the block whose ``fc`` and ``query`` kernels are captured.
    peak_lr: the rate after warmup.
    warmup: warmup steps.
    decay_steps: steps of the whole cosine schedule.
  """

  width: int = 128
  depth: int = 3
  heads: int = 4
  batch_size: int = 32
  first: int = 40
  last: int = 80
  block: int = 1
  peak_lr: float = 0.012
  warmup: int = 30
  decay_steps: int = 300

  def describe(self) -> str:
    """A line for the record."""
    return (f"configs/compare_full.py model at width {self.width}, depth "
            f"{self.depth}, {self.heads} heads, batch {self.batch_size}, "
            f"seed 0; block {self.block}'s fc and query kernels, steps "
            f"{self.first}-{self.last - 1} of full-precision consistent-RMS "
            f"Muon (rate {self.peak_lr}, warmup {self.warmup}, cosine over "
            f"{self.decay_steps})")

  def cache_name(self) -> str:
    """The cache file's name: every field, so another capture misses."""
    fields = dataclasses.astuple(self)
    return "gpt_" + "_".join(str(f) for f in fields) + ".npz"


SOURCES: dict[str, Capture | None] = {
    "synthetic": None,
    "gpt": Capture(),
    "gpt512": Capture(width=512, depth=4, heads=8, batch_size=8, first=100,
                      last=140),
}


def gpt_gradients(capture: Capture, cache: Path | None = None) -> Gradients:
  """Gradients of a GPT's ``fc`` and ``query`` kernels while
  full-precision Muon trains it.

  Args:
    capture: what to capture.
    cache: a directory; the gradients are read from
      ``capture.cache_name()`` there when present, else captured and
      written there. None: captured, not cached.

  Returns:
    One ``{"fc": ..., "query": ...}`` a captured step.
  """
  path = None if cache is None else Path(cache) / capture.cache_name()
  if path is not None and path.exists():
    with np.load(path) as stored:
      arrays = {name: stored[name] for name in stored.files}
    steps = len(next(iter(arrays.values())))
    return [{name: a[i] for name, a in arrays.items()} for i in range(steps)]
  config = defaults.full_config()
  config.model = defaults.lm_model(context=config.model.context,
                                   width=capture.width, depth=capture.depth,
                                   heads=capture.heads)
  config.train.batch_size = capture.batch_size
  task = tasks.make_task(config, seed=0)
  graphdef, params = nnx.split(task.model, nnx.Param)
  params = nnx.to_pure_dict(params)
  tx = qm.muon(optax.warmup_cosine_decay_schedule(
      0.0, capture.peak_lr, capture.warmup, capture.decay_steps),
               consistent_rms=0.2)
  state = tx.init(params)

  @jax.jit
  def step(params, state, batch):
    def loss(p):
      return task.loss(nnx.merge(graphdef, nnx.State(p)), batch)[0]
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    block = grads["blocks"][capture.block]
    picked = {"fc": block["mlp"]["fc"]["kernel"],
              "query": block["attn"]["query"]["kernel"]}
    return optax.apply_updates(params, updates), state, picked

  captured = []
  for t in range(capture.last):
    params, state, picked = step(params, state, task.train_batch(t))
    if t >= capture.first:
      captured.append(jax.tree.map(np.asarray, picked))
  if path is not None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{name: np.stack([g[name] for g in captured])
                      for name in captured[0]})
  return captured


def run_updates(tx: optax.GradientTransformation, grads: Gradients
                ) -> dict[str, np.ndarray]:
  """Every step's update of ``tx`` on ``grads``, per leaf, flattened.

  Returns:
    ``leaf -> (steps, leaf size)`` float32 array.
  """
  params = jax.tree.map(jnp.zeros_like, grads[0])
  state = tx.init(params)
  update = jax.jit(tx.update)
  out = {name: [] for name in grads[0]}
  for g in grads:
    u, state = update(g, state, params)
    for name in out:
      out[name].append(np.ravel(np.asarray(u[name])))
  return {name: np.stack(us) for name, us in out.items()}


def cosines(ours: dict[str, np.ndarray], twin: dict[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
  """Per leaf, the cosine of each step's update with the twin's.

  Args:
    ours, twin: from :func:`run_updates`.

  Returns:
    ``leaf -> (steps,)`` cosines.
  """
  return {name: np.sum(a * twin[name], 1) / (
      np.linalg.norm(a, axis=1) * np.linalg.norm(twin[name], axis=1))
          for name, a in ours.items()}


def summary(cos: np.ndarray) -> dict[str, float]:
  """Min and mean cosine over all steps and from update :data:`SETTLED`
  on (NaN when there are no such steps)."""
  settled = cos[SETTLED:]
  nan = float("nan")
  return {"min_cosine": round(float(cos.min()), 4),
          "mean_cosine": round(float(cos.mean()), 4),
          "min_cosine_settled": round(float(settled.min()), 4)
                                if settled.size else nan,
          "mean_cosine_settled": round(float(settled.mean()), 4)
                                 if settled.size else nan}


def bytes_per_param(tx: optax.GradientTransformation,
                    shape: tuple[int, ...]) -> float:
  """Bytes of ``tx``'s state for one matrix of ``shape``, per element
  (``quantmuon.nbytes``, from shapes alone; its step count included)."""
  leaf = jax.ShapeDtypeStruct(shape, jnp.float32)
  state = jax.eval_shape(tx.init, {"w": leaf})
  return qm.nbytes(state) / int(np.prod(shape))


def fidelity(specs: Sequence[str], sources: dict[str, Gradients]
             ) -> list[dict[str, Any]]:
  """The rows of the record: one per preset, source and leaf.

  Twins with equal options are run once per source.

  Args:
    specs: preset specs (see :func:`variant`).
    sources: name -> gradients.

  Returns:
    One dict a row.
  """
  rows = []
  twins: dict[str, list] = {name: [] for name in sources}
  for spec in specs:
    v = variant(spec)
    twin_opts = v.twin.options(LR, min_size=0)[1]
    for source, grads in sources.items():
      found = [u for opts, u in twins[source] if opts == twin_opts]
      if found:
        twin = found[0]
      else:
        twin = run_updates(v.twin(LR, min_size=0), grads)
        twins[source].append((twin_opts, twin))
      tx = v(LR, min_size=0)
      for leaf, cos in cosines(run_updates(tx, grads), twin).items():
        shape = grads[0][leaf].shape
        rows.append({"preset": spec, "source": source, "leaf": leaf,
                     "kind": KINDS.get(leaf, leaf),
                     "shape": "x".join(map(str, shape)), "steps": len(cos),
                     **summary(cos),
                     "B_per_param": round(bytes_per_param(tx, shape), 3)})
  return rows


def merged(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
  """``rows`` after the rows recorded at ``path`` of the (preset, source)
  pairs they do not hold."""
  if not path.exists():
    return rows
  ran = {(r["preset"], r["source"]) for r in rows}
  kept = [r for r in json.loads(path.read_text())["rows"]
          if (r["preset"], r["source"]) not in ran]
  return kept + rows


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", default=",".join(PRESETS))
  parser.add_argument("--sources", default=",".join(SOURCES))
  parser.add_argument("--cache", default=str(
      Path(tempfile.gettempdir()) / "quantmuon_fidelity"))
  parser.add_argument("--no-record", action="store_true",
                      help="print the table only, leave the record as is")
  args = parser.parse_args(argv)
  specs = args.presets.split(",")
  for spec in specs:
    variant(spec)
  names = args.sources.split(",")
  unknown = sorted(set(names) - set(SOURCES))
  if unknown:
    raise ValueError(f"fidelity: unknown source(s) {unknown} in --sources; "
                     f"choose from {sorted(SOURCES)}.")
  start = time.perf_counter()
  sources = {name: (synthetic_gradients() if SOURCES[name] is None
                    else gpt_gradients(SOURCES[name], Path(args.cache)))
             for name in names}
  print(f"gradients ready in {time.perf_counter() - start:.0f} s")
  rows = fidelity(specs, sources)
  meta = {"learning_rate": LR, "min_size": 0, "settled_from": SETTLED,
          "synthetic": "30 steps, 256x512, drifting rank 8 (signal norm "
          "0.25x noise, drift 0.02), seed 0",
          **{name: c.describe() for name, c in SOURCES.items()
             if c is not None}}
  columns = ["preset", "source", "leaf", "kind", "shape", "min_cosine",
             "mean_cosine", "min_cosine_settled", "mean_cosine_settled",
             "B_per_param"]
  if args.no_record:
    common.print_table(rows, columns, title="== fidelity ==")
  else:
    common.report("fidelity", merged(rows, common.RESULTS / "fidelity.json"),
                  columns, meta=meta)
  print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()
