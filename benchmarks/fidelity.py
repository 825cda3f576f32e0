"""Update fidelity: each preset's update against its full-precision twin's.

Both optimizers see the same gradient sequence; each step's update of the
quantized preset is compared with the twin's by cosine similarity, so the
quantization error that the stored momentum carries into later steps shows
up as it accumulates. Two sources of gradients:

- ``synthetic``: 30 steps of a 256 x 512 gradient made of a slowly drifting
  rank-8 signal plus unit Gaussian noise (the signal's Frobenius norm a
  quarter of the noise's; seeded);
- ``gpt``: gradients of two matrices of the small GPT of
  ``configs/compare_full.py`` (an MLP ``fc`` kernel and an attention ``query``
  kernel), captured over steps 40-79 of a full-precision Muon run.

Usage: python -m benchmarks.fidelity [--presets muonq,muon_grasp]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import quantmuon as qm
from benchmarks import common
from configs import compare_full as compare_config
from quantmuon_experiments import tasks

LR = 1e-2
PRESETS: dict[str, Callable[..., Any]] = {
    "muon_8bit": qm.muon_8bit,
    "muon_8bit_dynamic": lambda lr, **kw: qm.muon_8bit(lr, scheme="dynamic",
                                                       **kw),
    "muon_4bit": qm.muon_4bit,
    "muonq": qm.muonq,
    "muonq_after_scale": lambda lr, **kw: qm.muonq(
        lr, companding="after_scale", **kw),
    "muon_grasp": qm.muon_grasp,
    "muon_lowbit": qm.muon_lowbit,
    "muon_lowbit_2bit": lambda lr, **kw: qm.muon_lowbit(lr, bits=2, **kw),
}


def synthetic_gradients(steps: int = 30, shape: tuple[int, int] = (256, 512),
                        rank: int = 8, drift: float = 0.02,
                        signal: float = 0.25, seed: int = 0
                        ) -> list[dict[str, np.ndarray]]:
  """A rank-``rank`` signal whose singular vectors drift, plus unit noise.

  The signal's Frobenius norm is ``signal`` times the noise's; its singular
  vectors move by about ``drift`` (relative) a step.
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


def gpt_gradients(first: int = 40, last: int = 80
                  ) -> list[dict[str, np.ndarray]]:
  """Gradients of two matrices of the compare config's GPT, captured while
  full-precision Muon (consistent RMS, the quantized presets' twin) trains
  it."""
  config = compare_config.get_config()
  task = tasks.make_task(config, seed=0)
  graphdef, params = nnx.split(task.model, nnx.Param)
  params = nnx.to_pure_dict(params)
  tx = qm.muon(optax.warmup_cosine_decay_schedule(0.0, 0.012, 30, 300),
               consistent_rms=0.2)
  state = tx.init(params)

  @jax.jit
  def step(params, state, batch):
    def loss(p):
      return task.loss(nnx.merge(graphdef, nnx.State(p)), batch)[0]
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    block = grads["blocks"][1]
    picked = {"fc": block["mlp"]["fc"]["kernel"],
              "query": block["attn"]["query"]["kernel"]}
    return optax.apply_updates(params, updates), state, picked

  captured = []
  for t in range(last):
    params, state, picked = step(params, state, task.train_batch(t))
    if t >= first:
      captured.append(jax.tree.map(np.asarray, picked))
  return captured


def cosines(make: Callable[..., Any], grads: list[dict[str, np.ndarray]]
            ) -> dict[str, np.ndarray]:
  """Per leaf, the cosine of ``make``'s update with its twin's, per step."""
  params = jax.tree.map(jnp.zeros_like, grads[0])

  def run(tx):
    state = tx.init(params)
    update = jax.jit(tx.update)
    out = []
    for g in grads:
      u, state = update(g, state, params)
      out.append(u)
    return out

  ours = run(make(LR, min_size=0))
  twin = run(qm.full_precision_twin(make)(LR, min_size=0))
  result = {}
  for name in grads[0]:
    a = np.stack([np.ravel(u[name]) for u in ours])
    b = np.stack([np.ravel(u[name]) for u in twin])
    result[name] = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1)
                                       * np.linalg.norm(b, axis=1))
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", default=",".join(PRESETS))
  args = parser.parse_args()
  sources = {"synthetic": synthetic_gradients(), "gpt": gpt_gradients()}
  rows = []
  for name in args.presets.split(","):
    for source, grads in sources.items():
      for leaf, cos in cosines(PRESETS[name], grads).items():
        rows.append({"preset": name, "source": source, "leaf": leaf,
                     "shape": "x".join(map(str, grads[0][leaf].shape)),
                     "steps": len(cos), "min_cosine": round(float(cos.min()),
                                                            4),
                     "mean_cosine": round(float(cos.mean()), 4)})
  common.report("fidelity", rows,
                ["preset", "source", "leaf", "shape", "min_cosine",
                 "mean_cosine"],
                meta={"learning_rate": LR, "min_size": 0,
                      "synthetic": "30 steps, 256x512, drifting rank 8 "
                      "(signal norm 0.25x noise, drift 0.02), seed 0",
                      "gpt": "configs/compare_full.py model, seed 0, steps "
                      "40-79 of full-precision consistent-RMS Muon"})


if __name__ == "__main__":
  main()
