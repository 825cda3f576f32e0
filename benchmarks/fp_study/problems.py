"""The study's training problems.

The extended Rosenbrock function of the 32 pairs of an 8 x 8 matrix, every
entry starting uniformly in [-1.5, 1.5] (distinct rows, so the gradient has
full rank); a tanh MLP (65 -> 16 -> 10, the bias folded into an input of
ones) with L2 1e-3 on scikit-learn's digits, minibatches of 32. The metric
is measured on each problem's ``full`` batch (Rosenbrock: the full
gradient; MLP: a fixed set of 512 images).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class Problem:
  """A training problem.

  Attributes:
    name: shown in the tables.
    init: key -> parameters.
    loss: (parameters, batch) -> scalar.
    batch: key -> a minibatch (None for deterministic problems).
    full: the batch the metric is measured on.
  """
  name: str
  init: Callable[[jax.Array], Any]
  loss: Callable[[Any, Any], jax.Array]
  batch: Callable[[jax.Array], Any]
  full: Any


def rosenbrock() -> Problem:
  """The extended Rosenbrock function of an 8 x 8 matrix.

  ``f(X) = sum_i 100 (y_i - x_i^2)^2 + (1 - x_i)^2`` over the 32 pairs
  ``(x_i, y_i)`` of consecutive entries of ``vec(X)``; the minimum is at
  all ones. Entries start uniformly in [-1.5, 1.5].
  """
  def init(key):
    return {"X": jax.random.uniform(key, (8, 8), minval=-1.5, maxval=1.5)}

  def loss(params, batch):
    del batch
    x, y = params["X"].reshape(-1, 2).T
    return jnp.sum(100.0 * (y - x ** 2) ** 2 + (1.0 - x) ** 2)

  return Problem("rosenbrock", init, loss, lambda key: None, None)


def digits_mlp(batch_size: int = 32, hidden: int = 16,
               l2: float = 1e-3, evaluate: int = 512) -> Problem:
  """A tanh MLP on scikit-learn's bundled 8 x 8 digits (1797 images).

  Pixels scaled to [0, 1] with a constant 1 appended (the first layer's
  bias); both weights are matrices. The L2 term keeps the optimum's
  gradient norm from vanishing. The metric is measured on a fixed set of
  ``evaluate`` images (the first ones).
  """
  from sklearn.datasets import load_digits

  data = load_digits()
  x = np.concatenate([data.data / 16.0, np.ones((len(data.data), 1))], 1)
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(data.target, jnp.int32)

  def init(key):
    k1, k2 = jax.random.split(key)
    return {"W1": jax.random.normal(k1, (x.shape[1], hidden))
                  / math.sqrt(x.shape[1]),
            "W2": jax.random.normal(k2, (hidden, 10)) / math.sqrt(hidden)}

  def loss(params, batch):
    xb, yb = batch
    logits = jnp.tanh(xb @ params["W1"]) @ params["W2"]
    penalty = sum(jnp.sum(w ** 2) for w in jax.tree.leaves(params))
    return (optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            + 0.5 * l2 * penalty)

  def batch(key):
    idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
    return x[idx], y[idx]

  return Problem("digits_mlp", init, loss, batch,
                 (x[:evaluate], y[:evaluate]))


PROBLEMS = {"rosenbrock": rosenbrock, "digits_mlp": digits_mlp}
