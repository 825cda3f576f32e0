"""``quantmuon-demo``: every storage format on a real momentum-like matrix.

The matrix is the heavy-ball momentum ``M = beta * M + G`` of the first-layer
weights of a small two-layer tanh network, trained with that momentum on a
regression task whose inputs are heavy-tailed (Student-t) and whose targets
come from a low-rank teacher. Such momentum is low rank plus noise with heavy
tails, as the MuonQ and GRASP papers find in real models. Nothing is
downloaded.

``M`` is then stored in every format and read back. For each format the
table shows the relative error ``||M - D||_F / ||M||_F`` of the decoded
``D``, the cosine similarity of ``M`` and ``D``, the relative error after
Newton-Schulz (what Muon applies; GRASP finds it amplifies quantization
error), and the bytes a stored element really occupies.

``benchmarks/formats.py`` runs the same comparison at a larger size and
records it.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from quantmuon.formats import (
  Axiswise,
  Blockwise,
  Float,
  FloatingPoint,
  Format,
  Grid,
  Stored,
  Subspace,
)
from quantmuon.memory import nbytes
from quantmuon.transforms.newton_schulz import (
  newton_schulz,
  newton_schulz_schedule,
)
from quantmuon_experiments import tables

COLUMNS = ("format", "rel_err", "cosine", "ns_rel_err", "bytes_per_elem")


def momentum_matrix(rows: int = 256, cols: int = 512, steps: int = 40,
                    beta: float = 0.95, batch: int = 256, rank: int = 8,
                    lr: float = 0.02, seed: int = 0) -> np.ndarray:
  """Momentum of the first layer of a small network after ``steps`` steps.

  The network is ``tanh(X W1) W2`` with ``W1`` of shape ``(rows, cols)``; the
  targets are ``tanh(X A) B`` for a teacher ``A`` of rank ``rank``; inputs
  are Student-t with 3 degrees of freedom. Each step draws a batch, takes the
  mean-squared-error gradients, accumulates ``M = beta * M + G`` for both
  weights, and moves the weights by ``-lr * M``.

  Args:
    rows: input width (rows of the returned matrix).
    cols: hidden width (its columns).
    steps: optimizer steps.
    beta: momentum coefficient.
    batch: examples a step.
    rank: the teacher's rank (and output width).
    lr: step size.
    seed: seed of the teacher, the initialization and the data.

  Returns:
    The float32 momentum of ``W1``, shape ``(rows, cols)``.
  """
  momentum = _momentum(jax.random.key(seed), beta, lr, rows=rows, cols=cols,
                       steps=steps, batch=batch, rank=rank)
  return np.asarray(momentum, np.float32)


@functools.partial(jax.jit, static_argnames=("rows", "cols", "steps",
                                             "batch", "rank"))
def _momentum(key: jax.Array, beta: float, lr: float, *, rows: int,
              cols: int, steps: int, batch: int, rank: int) -> jax.Array:
  """The training loop of :func:`momentum_matrix`, compiled once a size."""
  keys = jax.random.split(key, 5)
  teacher_a = jax.random.normal(keys[0], (rows, rank)) / np.sqrt(rows)
  teacher_b = jax.random.normal(keys[1], (rank, rank))
  w1 = jax.random.normal(keys[2], (rows, cols)) / np.sqrt(rows)
  w2 = jax.random.normal(keys[3], (cols, rank)) / np.sqrt(cols)

  def loss(weights, x):
    target = jnp.tanh(x @ teacher_a) @ teacher_b
    pred = jnp.tanh(x @ weights[0]) @ weights[1]
    return jnp.mean((pred - target) ** 2)

  def step(carry, key):
    weights, momentum = carry
    x = jax.random.t(key, 3.0, (batch, rows))
    grads = jax.grad(loss)(weights, x)
    momentum = jax.tree.map(lambda m, g: beta * m + g, momentum, grads)
    weights = jax.tree.map(lambda w, m: w - lr * m, weights, momentum)
    return (weights, momentum), None

  weights = (w1, w2)
  momentum = jax.tree.map(jnp.zeros_like, weights)
  (_, momentum), _ = jax.lax.scan(
      step, (weights, momentum), jax.random.split(keys[4], steps))
  return momentum[0]


def formats() -> dict[str, Format]:
  """Every storage format compared, by name.

  Float (fp32, bf16); Blockwise linear / dynamic / mu-law at 8, 4 and 2 bits
  with blocks of 2048 (8-bit Muon) and 128; Axiswise at 4 bits per tensor,
  row and column (MuonQ's per-tensor and per-column scales, linear and
  mu-law); Grid at 4 bits (GRASP); simulated e4m3 and e5m2 floats; and the
  MuonQ- and GRASP-style subspace formats (k = min(m, n) / 16).
  """
  out: dict[str, Format] = {"fp32": Float(jnp.float32),
                            "bf16": Float(jnp.bfloat16)}
  for block in (2048, 128):
    for bits in (8, 4, 2):
      for codebook in ("linear", "dynamic", "mulaw"):
        out[f"block{block}-{codebook}{bits}"] = Blockwise(
            bits=bits, codebook=codebook, block_size=block)
  for codebook in ("linear", "mulaw"):
    for axis in ("tensor", "row", "col"):
      out[f"{axis}-{codebook}4"] = Axiswise(bits=4, codebook=codebook,
                                            axis=axis)
  out["grid128-linear4"] = Grid(bits=4, tile=128)
  out["grid128-mulaw4"] = Grid(bits=4, tile=128, codebook="mulaw")
  out["fp8-e4m3"] = FloatingPoint(4, 3)
  out["fp8-e5m2"] = FloatingPoint(5, 2)
  out["muonq-subspace4"] = Subspace(
      rank_divisor=16,
      factors=Axiswise(bits=4, codebook="mulaw", axis="col"),
      residual=Axiswise(bits=4, codebook="mulaw", axis="tensor"))
  out["grasp-subspace4"] = Subspace(
      rank_divisor=16, factors=Blockwise(bits=8, block_size=128),
      residual=Grid(bits=4, tile=128))
  return out


def store(fmt: Format, x: jax.Array, warm_steps: int = 3) -> Stored:
  """Encodes ``x``; a ``Subspace`` is warm-started ``warm_steps`` times.

  In training, a subspace format's power iteration starts from the factors
  stored at the previous step. Re-encoding the same matrix from its own
  stored value a few times gives the subspace it settles on. The compiled
  encoders are kept per format, so many matrices of a few shapes compile
  once.
  """
  first, warm = _encoders(fmt)
  stored = first(jnp.asarray(x))
  if isinstance(fmt, Subspace):
    for _ in range(warm_steps):
      stored = warm(jnp.asarray(x), stored)
  return stored


@functools.cache
def _encoders(fmt: Format) -> tuple[Any, Any]:
  """Jitted first and warm-started encoders, compiled once per format."""
  return (jax.jit(fmt.encode),
          jax.jit(lambda x, previous: fmt.encode(x, previous=previous)))


@jax.jit
def _decode(stored: Stored) -> jax.Array:
  return stored.decode()


@jax.jit
def _orthogonalize(x: jax.Array) -> jax.Array:
  """Muon's Newton-Schulz: 5 quintic steps."""
  return newton_schulz(x, newton_schulz_schedule("quintic", 5))


def evaluate(x: np.ndarray, fmt: Format, warm_steps: int = 3
             ) -> dict[str, float]:
  """Errors and bytes of storing ``x`` in ``fmt``.

  Args:
    x: the matrix.
    fmt: the format.
    warm_steps: warm starts of subspace formats (see :func:`store`).

  Returns:
    ``rel_err``, ``cosine``, ``ns_rel_err`` (relative error of
    Newton-Schulz's output, 5 quintic steps) and ``bytes_per_elem``.
  """
  xj = jnp.asarray(x)
  stored = store(fmt, xj, warm_steps)
  decoded = _decode(stored)
  x64 = np.asarray(x, np.float64)
  d64 = np.asarray(decoded, np.float64)
  o64 = np.asarray(_orthogonalize(xj), np.float64)
  od64 = np.asarray(_orthogonalize(decoded), np.float64)
  norm_x, norm_d = np.linalg.norm(x64), np.linalg.norm(d64)
  return {
      "rel_err": float(np.linalg.norm(x64 - d64) / norm_x),
      "cosine": float(np.sum(x64 * d64) / max(norm_x * norm_d, 1e-30)),
      "ns_rel_err": float(np.linalg.norm(o64 - od64) / np.linalg.norm(o64)),
      "bytes_per_elem": nbytes(stored) / x.size,
  }


def compare(x: np.ndarray, names: Sequence[str] | None = None,
            warm_steps: int = 3,
            progress: Callable[[str], Any] | None = None
            ) -> list[dict[str, Any]]:
  """Evaluates every format (or those in ``names``) on ``x``.

  Args:
    x: the matrix.
    names: keys of :func:`formats` to run; all when None.
    warm_steps: warm starts of subspace formats.
    progress: called with each format's name before it runs.

  Returns:
    One row a format: its name, its repr and :func:`evaluate`'s numbers.
  """
  table = formats()
  rows = []
  for name in names or table:
    if progress is not None:
      progress(name)
    fmt = table[name]
    rows.append({"format": name, **evaluate(x, fmt, warm_steps),
                 "spec": repr(fmt)})
  return rows


def main(argv: Sequence[str] | None = None) -> None:
  """Entry point of ``quantmuon-demo``."""
  parser = argparse.ArgumentParser(
      prog="quantmuon-demo",
      description="Store a momentum-like matrix in every quantmuon format "
      "and print the errors and bytes.")
  parser.add_argument("--rows", type=int, default=256)
  parser.add_argument("--cols", type=int, default=512)
  parser.add_argument("--steps", type=int, default=40,
                      help="optimizer steps that build the momentum")
  parser.add_argument("--formats", default=None,
                      help="comma-separated format names (default: all)")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  x = momentum_matrix(args.rows, args.cols, args.steps)
  print(f"momentum of a {args.rows} x {args.cols} layer after {args.steps} "
        f"steps (beta 0.95), on {jax.devices()[0].platform}")
  names = args.formats.split(",") if args.formats else None
  rows = compare(x, names)
  print(tables.text(rows, COLUMNS))
  print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  main()
