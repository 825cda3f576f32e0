"""What each optimizer's state and training step take at a config's size.

For every optimizer of each config (by default ``configs/gpt2_small.py``,
GPT-2 small with 124M parameters, and ``configs/compare_full.py``), without
training and without allocating the model:

- the optimizer state from shapes alone (``jax.eval_shape``): the whole
  state, its bytes per matrix parameter (Muon's leaves) and per parameter,
  and the rest (AdamW's moments of embeddings, head, norms and biases);
- the training memory that does not depend on the batch: float32
  parameters and gradients plus the state (``floor_GiB``), and the state's
  share of it;
- with ``--compile``, the training step's memory on this machine's
  backend, from XLA's memory analysis of the compiled step (seconds per
  optimizer at 124M parameters, minutes for all of them on 2 CPU cores):
  arguments + outputs + temporaries - aliased (the donated parameters and
  state), and the state's share of it. The step's memory is the
  backend's: a CPU compiles a different program than a GPU or a TPU, so
  run this where you would train.

Usage: python -m benchmarks.memory_at_scale [--configs a.py,b.py]
  [--optimizers muon,muonq] [--compile [--batch_size 8]]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from benchmarks import common
from quantmuon_experiments import model, optimizers, state_memory, tasks, train

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ("configs/gpt2_small.py", "configs/compare_full.py")
MIB = 2**20


def load_config(path: str) -> ml_collections.ConfigDict:
  """``get_config()`` of a config file (``file.py`` or ``file.py:arg``)."""
  file, _, arg = path.partition(":")
  spec = importlib.util.spec_from_file_location("_config", ROOT / file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*([arg] if arg else []))


def abstract_gpt(config: ml_collections.ConfigDict
                 ) -> tuple[nnx.GraphDef, dict[str, Any]]:
  """The GPT of ``config.model`` as a graph and parameter shapes.

  Args:
    config: an ``lm`` experiment config.

  Returns:
    ``(graphdef, params)``, the params as ``jax.ShapeDtypeStruct``s.
  """
  if config.task != "lm":
    raise SystemExit(f"memory_at_scale: config.task must be 'lm', got "
                     f"{config.task!r}; pass a GPT config with --configs.")
  gpt = model.GPTConfig(**config.model.to_dict())
  net = nnx.eval_shape(lambda: model.GPT(gpt, nnx.Rngs(0)))
  graphdef, state = nnx.split(net)
  return graphdef, nnx.to_pure_dict(state)


def step_memory(config: ml_collections.ConfigDict, graphdef: nnx.GraphDef,
                params: dict[str, Any], tx: Any, batch_size: int
                ) -> dict[str, int]:
  """``train.memory_stats`` of the compiled step, from shapes only."""
  tokens = jax.ShapeDtypeStruct((batch_size, config.model.context + 1),
                                jnp.int32)
  step = train.make_step(graphdef, tasks.lm_loss, tx)
  compiled = step.lower(params, jax.eval_shape(tx.init, params),
                        {"tokens": tokens}).compile()
  return train.memory_stats(compiled)


def rows_of(path: str, names: list[str] | None, batch_size: int | None,
            compile_step: bool) -> list[dict[str, Any]]:
  """One row per optimizer of the config at ``path``."""
  config = load_config(path)
  graphdef, params = abstract_gpt(config)
  batch = batch_size or int(config.train.batch_size)
  names = names or [n.strip() for n in config.optimizers.split(",")]
  rows = []
  for name in names:
    config.optimizer.name = name
    tx = train.guard(optimizers.build(config.optimizer, 1000)[0],
                     config.train)
    split = state_memory.state_split(tx, params)
    row = {
        "config": path, "optimizer": name, "params": split["params"],
        "matrix_params": split["matrix_params"],
        "state_MiB": split["state_bytes"] / MIB,
        "B_per_matrix_param": split["matrix_state_bytes"]
        / split["matrix_params"],
        "B_per_param": split["state_bytes"] / split["params"],
        "rest_MiB": split["other_state_bytes"] / MIB,
        **split,
    }
    floor = 8 * split["params"] + split["state_bytes"]
    row.update(floor_GiB=floor / 2**30,
               floor_state_pct=100 * split["state_bytes"] / floor)
    if compile_step:
      memory = step_memory(config, graphdef, params, tx, batch)
      need = memory["total"] - memory["aliased"]
      row.update(batch_size=batch, step_memory=memory,
                 step_GiB=need / 2**30,
                 state_share_pct=100 * split["state_bytes"] / need)
    rows.append(row)
  reference = next((r for r in rows if r["optimizer"] == "muon"), rows[0])
  for row in rows:
    row["saved_vs_" + reference["optimizer"] + "_MiB"] = (
        reference["state_MiB"] - row["state_MiB"])
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
  parser.add_argument("--optimizers", default="",
                      help="comma-separated; default: each config's list")
  parser.add_argument("--compile", action="store_true",
                      help="also compile each training step for its memory")
  parser.add_argument("--batch_size", type=int, default=0,
                      help="with --compile; default: each config's")
  args = parser.parse_args()
  names = [n for n in args.optimizers.split(",") if n] or None
  rows = []
  for path in args.configs.split(","):
    rows += rows_of(path, names, args.batch_size or None, args.compile)
  columns = ["config", "optimizer", "params", "state_MiB",
             "B_per_matrix_param", "B_per_param", "rest_MiB",
             "saved_vs_muon_MiB", "floor_GiB", "floor_state_pct"]
  if args.compile:
    columns += ["batch_size", "step_GiB", "state_share_pct"]
  common.report("memory_at_scale", rows, columns, meta={
      "configs": args.configs, "compiled": args.compile,
      "backend": jax.default_backend()})


if __name__ == "__main__":
  main()
