"""Tasks: a model, its batches and its loss, built from a config.

``lm`` is next-byte prediction with the GPT decoder on a byte corpus;
``digits`` is classification of scikit-learn's 8x8 digits with an MLP or a
CNN. The training loop sees only the :class:`Task` interface.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from quantmuon_experiments import classifier, data, errors, model

Batch = dict[str, np.ndarray]
LossFn = Callable[[nnx.Module, Batch], tuple[jax.Array, dict[str, jax.Array]]]
EVAL_SEED = 12345  # fixed validation windows, the same for every run


@dataclasses.dataclass
class Task:
  """What the training loop needs to know about a problem.

  Attributes:
    model: the freshly initialized NNX model.
    train_batch: the training batch of a step, a pure function of the step.
    eval_batches: the fixed validation batches.
    loss: ``(model, batch) -> (mean loss, metrics)``.
    info: a description for logs and reports (data size, parameters,
      ``unit`` and ``items_per_step`` for the throughput).
  """

  model: nnx.Module
  train_batch: Callable[[int], Batch]
  eval_batches: list[Batch]
  loss: LossFn
  info: dict[str, Any]


@functools.lru_cache(maxsize=4)
def _corpus(path: str, suffixes: tuple[str, ...] | None, max_bytes: int,
            chunk_size: int, val_fraction: float):
  try:
    raw = data.read_corpus(path or None, suffixes, max_bytes)
    return data.split_corpus(raw, chunk_size, val_fraction)
  except (FileNotFoundError, ValueError) as e:
    raise errors.ConfigError(f"config.data: {e}") from e


def _suffixes(text: str) -> tuple[str, ...] | None:
  return tuple(s.strip() for s in text.split(",") if s.strip()) or None


def lm_loss(net: nnx.Module, batch: Batch
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Next-byte cross-entropy of ``batch["tokens"]`` (batch, context + 1).

  Args:
    net: the GPT.
    batch: ``{"tokens": int32 windows}``.

  Returns:
    ``(mean loss, {"loss", "bits_per_byte"})``.
  """
  tokens = batch["tokens"]
  logits = net(tokens[:, :-1])
  loss = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), tokens[:, 1:]).mean()
  return loss, {"loss": loss, "bits_per_byte": loss / jnp.log(2.0)}


def lm_task(config: ml_collections.ConfigDict, seed: int) -> Task:
  """Next-byte prediction on a text corpus.

  Args:
    config: the experiment config (``model``, ``data``, ``train``).
    seed: model initialization and batch seed.

  Returns:
    The task.
  """
  mc, dc, tc = config.model, config.data, config.train
  if mc.vocab_size < 256:
    raise errors.ConfigError(
        f"config.model.vocab_size: a byte corpus needs at least 256, got "
        f"{mc.vocab_size}.")
  try:
    gpt_config = model.GPTConfig(
        vocab_size=mc.vocab_size, context=mc.context, width=mc.width,
        depth=mc.depth, heads=mc.heads, mlp_ratio=mc.mlp_ratio,
        tied_head=mc.tied_head, scan_layers=mc.get("scan_layers", False))
  except ValueError as e:
    raise errors.ConfigError(f"config.model: {e}") from e
  chunk = max(dc.chunk_size, mc.context + 1)
  train, val = _corpus(str(dc.path or ""), _suffixes(dc.suffixes),
                       int(dc.max_bytes), chunk, float(dc.val_fraction))
  length, batch_size = mc.context + 1, tc.batch_size

  def train_batch(step: int) -> Batch:
    rng = np.random.default_rng([seed, step])
    return {"tokens": train.windows(rng, batch_size, length)}

  rng = np.random.default_rng(EVAL_SEED)
  evals = [{"tokens": val.windows(rng, batch_size, length)}
           for _ in range(tc.eval_batches)]
  net = model.GPT(gpt_config, nnx.Rngs(seed))
  info = {"task": "lm", "corpus": str(dc.path or data.default_corpus_path()),
          "train_bytes": train.num_bytes, "val_bytes": val.num_bytes,
          "params": model.count_params(net), "unit": "tok",
          "items_per_step": batch_size * mc.context}
  return Task(net, train_batch, evals, lm_loss, info)


def _digits_loss(net: nnx.Module, batch: Batch):
  logits = net(batch["images"])
  loss = optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["labels"]).mean()
  accuracy = (logits.argmax(-1) == batch["labels"]).mean()
  return loss, {"loss": loss, "accuracy": accuracy}


def digits_task(config: ml_collections.ConfigDict, seed: int) -> Task:
  """Classification of scikit-learn's 8x8 digits with an MLP or a CNN.

  Args:
    config: the experiment config (``model.kind`` is ``mlp`` or ``cnn``).
    seed: model initialization and batch seed.

  Returns:
    The task.
  """
  mc, dc, tc = config.model, config.data, config.train
  split = data.load_digits_split(dc.val_fraction)
  rngs = nnx.Rngs(seed)
  if mc.kind == "mlp":
    net = classifier.MLPClassifier(64, 10, mc.width, mc.depth, rngs)
  elif mc.kind == "cnn":
    net = classifier.CNNClassifier(8, 10, mc.width, rngs)
  else:
    raise errors.ConfigError(
        f"config.model.kind must be 'mlp' or 'cnn', got {mc.kind!r}.")
  n_train = len(split["train_labels"])
  batch_size = min(tc.batch_size, n_train)

  def train_batch(step: int) -> Batch:
    rng = np.random.default_rng([seed, step])
    idx = rng.choice(n_train, batch_size, replace=False)
    return {"images": split["train_images"][idx],
            "labels": split["train_labels"][idx]}

  evals = [{"images": split["val_images"], "labels": split["val_labels"]}]
  info = {"task": "digits", "model": mc.kind, "train_examples": n_train,
          "val_examples": len(split["val_labels"]),
          "params": model.count_params(net), "unit": "ex",
          "items_per_step": batch_size}
  return Task(net, train_batch, evals, _digits_loss, info)


TASKS = {"lm": lm_task, "digits": digits_task}


def make_task(config: ml_collections.ConfigDict, seed: int) -> Task:
  """Builds ``config.task`` (``lm`` or ``digits``).

  Args:
    config: the experiment config.
    seed: model initialization and batch seed.

  Returns:
    The task.

  Raises:
    ConfigError: the task, the model's shape or the data cannot work.
  """
  if config.task not in TASKS:
    raise errors.ConfigError(
        f"config.task must be one of {sorted(TASKS)}, got {config.task!r}.")
  return TASKS[config.task](config, seed)
