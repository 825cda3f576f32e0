"""One training run: jitted step, evaluation, JSON-lines metrics, checkpoints.

``train(config, workdir)`` trains ``config.task`` with ``config.optimizer``
and returns a summary (losses, state bytes, step time, compiled memory);
``train(config, workdir, tx=tx, name=...)`` trains it with a ready optax
optimizer instead, through the same loop. ``fit`` returns the final
parameters and optimizer state beside the summary.
With ``resume=True`` it continues from the newest checkpoint in
``workdir/checkpoints``; batches depend only on ``(seed, step)`` and the
restored arrays are the saved ones, so the continued run is bit-exact.

By default (``train.skip_nonfinite``) the optimizer is wrapped in
``optax.apply_if_finite``: a step whose gradients hold a NaN or an Inf
leaves the parameters and the optimizer's state as they were, and is
counted (``skipped`` in the metrics, ``skipped_steps`` in the summary). A
run stops as diverged after ``train.max_consecutive_skips`` skipped steps
in a row, or at a non-finite loss of a step that was applied.

Run it as ``quantmuon-train --config configs/train.py --workdir DIR`` or
``python -m quantmuon_experiments.train ...``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx

import quantmuon
from quantmuon_experiments import (
    checkpoint,
    cli,
    errors,
    metrics,
    model,
    optimizers,
    parallel,
    state_memory,
    tasks,
)
from quantmuon_experiments import progress as progress_lib

StepFn = Callable[[Any, Any, tasks.Batch], tuple[Any, Any, dict[str, Any]]]


@dataclasses.dataclass
class Placement:
  """Where a sharded run's arrays lie (see :mod:`parallel`).

  Attributes:
    mesh: the ``("data", "fsdp")`` mesh.
    params: the parameters' ``NamedSharding`` tree.
    opt_state: the optimizer state's
      (``quantmuon.sharding.state_shardings``).
    batch: the batches' (split over ``data``).
  """

  mesh: jax.sharding.Mesh
  params: Any
  opt_state: Any
  batch: jax.sharding.NamedSharding


def make_step(graphdef: nnx.GraphDef, loss: tasks.LossFn,
              tx: optax.GradientTransformation,
              shardings: Placement | None = None) -> StepFn:
  """The jitted training step ``(params, opt_state, batch) -> ...``.

  Args:
    graphdef: the model's graph, merged with the params inside the step.
    loss: the task's loss.
    tx: the optimizer.
    shardings: on a mesh, where the params, the state and the batch lie;
      the step takes and gives exactly these (the metrics replicated).
      None leaves placement to JAX (one device).

  Returns:
    A jitted function returning ``(params, opt_state, metrics)``; it donates
    its params and state.
  """

  def step(params, opt_state, batch):
    def objective(p):
      return loss(nnx.merge(graphdef, p), batch)

    grads, out = jax.grad(objective, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, out

  if shardings is None:
    return jax.jit(step, donate_argnums=(0, 1))
  return jax.jit(
      step, donate_argnums=(0, 1),
      in_shardings=(shardings.params, shardings.opt_state, shardings.batch),
      out_shardings=(shardings.params, shardings.opt_state,
                     parallel.replicated(shardings.mesh)))


# (field, least value, what to set): the fields of one run that must be
# numbers of at least some size (the learning rate: above it).
RUN_FIELDS = (
    ("train.steps", 1, "the number of training steps, e.g. 300"),
    ("train.batch_size", 1, "the number of examples per step, e.g. 32"),
    ("train.eval_every", 1, "the steps between evaluations, e.g. 25"),
    ("train.eval_batches", 1, "the batches of an evaluation, e.g. 8"),
    ("train.log_every", 1, "the steps between progress updates, e.g. 10"),
    ("train.checkpoint_every", 0, "the steps between checkpoints (0: none)"),
    ("optimizer.warmup_steps", 0, "the steps of the learning-rate warmup"),
    ("optimizer.learning_rate", 0, "a positive rate, e.g. 3e-3"),
    ("optimizer.adam_learning_rate", 0,
     "AdamW's rate in a Muon optimizer (0: the learning rate)"),
    ("optimizer.weight_decay", 0, "a decay of at least 0"),
    ("optimizer.adam_weight_decay", 0, "a decay of at least 0"),
    ("optimizer.final_lr_ratio", 0, "the last step's share of the peak "
     "rate, e.g. 0.1"),
    ("data.max_bytes", 0, "the bytes of corpus to read (0: all)"),
)


def _field(config: ml_collections.ConfigDict, path: str) -> Any:
  for key in path.split("."):
    config = config[key]
  return config


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` for a single-run config that cannot train.

  Checks the sizes of ``RUN_FIELDS``, builds the optimizer (its name and
  its preset's options) and checks the consecutive-skip limit; the model,
  the data and the mesh are checked when they are built
  (``tasks.make_task``, ``parallel.make_mesh``).

  Args:
    config: the experiment config.
  """
  for path, least, fix in RUN_FIELDS:
    errors.at_least(path, _field(config, path), least, fix,
                    exclusive=path == "optimizer.learning_rate")
  guard(build_optimizer(config)[0], config.train)


def build_optimizer(config: ml_collections.ConfigDict
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``optimizers.build`` for ``config``; a preset's refusal of its
  options is a ``ConfigError``.

  Args:
    config: the experiment config (``optimizer``, ``train.steps``).

  Returns:
    ``(optimizer, schedule of its main learning rate)``.
  """
  try:
    return optimizers.build(config.optimizer, config.train.steps,
                            stack_axes=_stack_axes(config))
  except errors.ConfigError:
    raise
  except (TypeError, ValueError) as e:
    raise errors.ConfigError(
        f"config.optimizer ({config.optimizer.name}): {e}") from e


def _stack_axes(config: ml_collections.ConfigDict) -> Any:
  """The optimizers' ``stack_axes`` of the config's model."""
  return model.stack_axes(config.task == "lm"
                          and config.model.get("scan_layers", False))


def guard(tx: optax.GradientTransformation,
          train_config: ml_collections.ConfigDict
          ) -> optax.GradientTransformation:
  """``tx`` wrapped in ``optax.apply_if_finite`` when skipping is on.

  Args:
    tx: the optimizer.
    train_config: ``config.train``: ``skip_nonfinite`` (bool) and
      ``max_consecutive_skips`` (at least 1).

  Returns:
    ``tx`` itself, or ``tx`` that skips updates with non-finite gradients.

  Raises:
    ConfigError: ``max_consecutive_skips`` is below 1.
  """
  if not train_config.skip_nonfinite:
    return tx
  limit = int(train_config.max_consecutive_skips)
  if limit < 1:
    raise errors.ConfigError(
        f"config.train.max_consecutive_skips must be at least 1, got "
        f"{limit}; set --config.train.skip_nonfinite=False to never skip.")
  return optax.apply_if_finite(tx, limit)


def consecutive_skips(opt_state: Any) -> int:
  """Steps skipped in a row so far (0 when the optimizer is not guarded).

  Args:
    opt_state: the state of ``guard(tx, ...)`` or of any optimizer.

  Returns:
    ``notfinite_count`` of an ``optax.ApplyIfFiniteState``, else 0.
  """
  if isinstance(opt_state, optax.ApplyIfFiniteState):
    return int(opt_state.notfinite_count)
  return 0


@functools.lru_cache(maxsize=8)
def _eval_step(graphdef: nnx.GraphDef, loss: tasks.LossFn
               ) -> Callable[[Any, tasks.Batch], dict[str, Any]]:
  """The jitted metrics of one batch; one per model, so the runs of a
  comparison (equal graphs) share its compilation."""
  return jax.jit(lambda params, batch: loss(nnx.merge(graphdef, params),
                                            batch)[1])


def make_eval(graphdef: nnx.GraphDef, loss: tasks.LossFn
              ) -> Callable[[Any, list[tasks.Batch]], dict[str, float]]:
  """The evaluation: mean of the task's metrics over fixed batches.

  Args:
    graphdef: the model's graph.
    loss: the task's loss.

  Returns:
    ``(params, batches) -> {metric: mean value}``.
  """
  one = _eval_step(graphdef, loss)

  def evaluate(params, batches):
    outs = [one(params, batch) for batch in batches]
    return {k: float(np.mean([o[k] for o in outs])) for k in outs[0]}

  return evaluate


def memory_stats(compiled: Any) -> dict[str, int]:
  """Bytes of a compiled step: arguments, outputs, temporaries, aliases.

  Args:
    compiled: ``jax.jit(f).lower(...).compile()``.

  Returns:
    The sizes, and ``total`` = arguments + outputs + temporaries (0 where
    the backend reports nothing).
  """
  stats = compiled.memory_analysis()
  names = {"arguments": "argument_size_in_bytes",
           "outputs": "output_size_in_bytes",
           "temporaries": "temp_size_in_bytes",
           "aliased": "alias_size_in_bytes"}
  out = {k: int(getattr(stats, v, 0) or 0) for k, v in names.items()}
  out["total"] = out["arguments"] + out["outputs"] + out["temporaries"]
  return out


@dataclasses.dataclass
class Setup:
  """A run ready to train: task, optimizer, state and the compiled step.

  Attributes:
    task: the task (model, batches, loss).
    graphdef: the model's graph.
    params: the initial parameters (a pure dict).
    tx: the optimizer, guarded by ``guard``.
    lr_schedule: the schedule of its main learning rate; None when the
      optimizer was given ready (``setup(config, tx)``).
    opt_state: ``tx.init(params)``.
    step: the compiled training step (see ``make_step``).
    memory: the step's ``memory_stats``.
    placement: the shardings on ``config.mesh``; None on one device.
  """

  task: tasks.Task
  graphdef: nnx.GraphDef
  params: Any
  tx: optax.GradientTransformation
  lr_schedule: optax.Schedule | None
  opt_state: Any
  step: StepFn
  memory: dict[str, int]
  placement: Placement | None = None


def setup(config: ml_collections.ConfigDict,
          tx: optax.GradientTransformation | None = None) -> Setup:
  """Builds ``config``'s task and optimizer and compiles the step.

  Args:
    config: the experiment config (see ``defaults.base_config``).
    tx: a ready optimizer to use instead of ``config.optimizer``'s (its
      schedule is its own business); it is guarded all the same.

  Returns:
    The ``Setup``; nothing has been trained. On a mesh
    (``config.mesh``, see :mod:`parallel`) the params and the state are
    placed by their shardings, and the step is traced under the mesh
    (``jax.set_mesh``), so the optimizer sees it.

  Raises:
    ConfigError: ``config.mesh`` does not fit the devices or the batch.
  """
  mesh = parallel.make_mesh(config)
  task = tasks.make_task(config, config.seed)
  graphdef, state = nnx.split(task.model)
  params = nnx.to_pure_dict(state)
  if tx is None:
    tx, lr_schedule = build_optimizer(config)
  else:
    lr_schedule = None
  tx = guard(tx, config.train)
  if mesh is None:
    opt_state = jax.jit(tx.init)(params)
    step_fn = make_step(graphdef, task.loss, tx)
    compiled = step_fn.lower(params, opt_state,
                             task.train_batch(0)).compile()
    return Setup(task, graphdef, params, tx, lr_schedule, opt_state,
                 compiled, memory_stats(compiled))
  param_sh = parallel.param_shardings(mesh, params)
  params = jax.device_put(params, param_sh)
  # Outside set_mesh: state_shardings traces init on Explicit axes of its
  # own, which a concrete Auto mesh in the context would contradict.
  placement = Placement(mesh, param_sh,
                        quantmuon.sharding.state_shardings(tx, params),
                        parallel.batch_sharding(mesh))
  with jax.set_mesh(mesh):
    opt_state = jax.jit(tx.init, out_shardings=placement.opt_state)(params)
    step_fn = make_step(graphdef, task.loss, tx, placement)
    compiled = step_fn.lower(params, opt_state,
                             task.train_batch(0)).compile()
  return Setup(task, graphdef, params, tx, lr_schedule, opt_state, compiled,
               memory_stats(compiled), placement)


def _median_step_time(records: list[dict[str, Any]]) -> float:
  times = [r["step_time_s"] for r in records if r.get("split") == "train"]
  times = times[2:] if len(times) > 4 else times  # first calls warm up
  return float(np.median(times)) if times else float("nan")


def summarize(records: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
  """A run's summary from its metric records.

  Args:
    records: the JSON-lines records (``split`` ``train`` or ``val``).
    **extra: fields to add (optimizer, bytes, memory, ...).

  Returns:
    ``final_val_loss``, ``best_val_loss``, ``final_train_loss``,
    ``step_time_s``, ``skipped_steps``, ``train_curve`` and ``val_curve``
    (lists of ``[step, loss]``; skipped steps are left out of the training
    curve), and ``extra``.
  """
  train = [[r["step"], r["loss"]] for r in records
           if r["split"] == "train" and not r.get("skipped")]
  val = [[r["step"], r["loss"]] for r in records if r["split"] == "val"]
  out = dict(extra)
  out.update(
      final_val_loss=val[-1][1] if val else float("nan"),
      best_val_loss=min(v for _, v in val) if val else float("nan"),
      final_train_loss=train[-1][1] if train else float("nan"),
      step_time_s=_median_step_time(records),
      skipped_steps=sum(bool(r.get("skipped")) for r in records),
      train_curve=train, val_curve=val)
  final = [r for r in records if r["split"] == "val"]
  if final:
    out["final_val_metrics"] = {k: v for k, v in final[-1].items()
                                if k not in ("step", "split")}
  return out


@dataclasses.dataclass
class Trained:
  """What ``fit`` returns.

  Attributes:
    summary: the run's summary (see ``train``).
    params: the final parameters (a pure dict).
    opt_state: the final optimizer state.
    setup: the run's ``Setup`` holding the final parameters and state, its
      compiled step ready to step on (e.g. to be timed).
  """

  summary: dict[str, Any]
  params: Any
  opt_state: Any
  setup: Setup


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
          **kwargs: Any) -> dict[str, Any]:
  """Trains ``config.task`` for ``train.steps`` and returns the summary.

  Args:
    config: the experiment config (see ``defaults.base_config``).
    workdir: the run's directory.
    **kwargs: ``tx``, ``name``, ``resume``, ``desc``, ``stop_after``,
      ``progress`` (see ``fit``).

  Returns:
    ``fit(config, workdir, **kwargs).summary``.
  """
  return fit(config, workdir, **kwargs).summary


def fit(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
        *, tx: optax.GradientTransformation | None = None,
        name: str | None = None, resume: bool = False,
        desc: str | None = None, stop_after: int | None = None,
        progress: progress_lib.Progress | None = None) -> Trained:
  """Trains ``config.task`` with ``config.optimizer`` (or ``tx``).

  Writes ``metrics.jsonl``, ``summary.json`` and, when
  ``train.checkpoint_every`` > 0, ``checkpoints/`` to ``workdir``.

  Args:
    config: the experiment config (see ``defaults.base_config``).
    workdir: the run's directory.
    tx: a ready optax optimizer to train with instead of
      ``config.optimizer``'s; it is guarded (``guard``) the same way, and
      its learning rate is neither logged nor summarized.
    name: the run's name in the summary and the progress bar;
      ``config.optimizer.name`` by default.
    resume: continue from the newest checkpoint in ``workdir`` (a fresh run
      when there is none).
    desc: label of the progress bar (``name`` by default).
    stop_after: stop once this many steps are done, as if interrupted (the
      schedule still spans ``train.steps``); None runs to the end.
    progress: where to show the run's progress (and close it at the end),
      e.g. a comparison's line; by default a bar or lines of its own
      (``progress.make``).

  Returns:
    The final parameters and state, and the summary (see ``summarize``)
    with ``optimizer`` (``name``), ``seed``, ``learning_rate``
    (``config.optimizer.learning_rate``, None with ``tx``), ``params``,
    ``state_bytes``,
    ``state_bytes_per_param``, the split of the state (``matrix_params``,
    ``matrix_state_bytes``, ``state_bytes_per_matrix_param``,
    ``other_params``, ``other_state_bytes``; see
    ``state_memory.state_split``), ``compiled_step_memory_bytes``,
    ``compiled_step_memory`` (its parts), ``task``, ``skipped_steps`` and
    ``diverged`` (the run stopped at a non-finite loss or after too many
    skipped steps; its validation losses are then NaN).
  """
  os.makedirs(workdir, exist_ok=True)
  tc = config.train
  name = name or config.optimizer.name
  run = setup(config, tx)
  task, params, opt_state = run.task, run.params, run.opt_state
  compiled, memory, lr_schedule = run.step, run.memory, run.lr_schedule
  n_params = sum(int(p.size) for p in jax.tree.leaves(params))
  state_bytes = quantmuon.nbytes(opt_state)
  split = state_memory.state_split(run.tx, params, _stack_axes(config))
  evaluate = make_eval(run.graphdef, task.loss)

  log = metrics.MetricsLog(os.path.join(workdir, "metrics.jsonl"))
  ckpt = None
  if tc.checkpoint_every > 0 or resume:
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   tc.checkpoint_every)
  start = ckpt.latest_step() if resume else None
  if start is None:
    start = 0
    log.clear()
  else:
    params, opt_state = ckpt.restore(start, params, opt_state)
    log.truncate(start)

  items = task.info["items_per_step"]
  bar = progress or progress_lib.make(tc.progress, tc.steps, start,
                                      desc or name)
  postfix: dict[str, str] = {}
  diverged = False
  end = tc.steps if stop_after is None else min(stop_after, tc.steps)
  for step in range(start, end):
    batch = task.train_batch(step)
    if run.placement is not None:
      batch = jax.device_put(batch, run.placement.batch)
    t0 = time.perf_counter()
    params, opt_state, out = compiled(params, opt_state, batch)
    loss = float(out["loss"])
    dt = time.perf_counter() - t0
    done = step + 1
    in_a_row = consecutive_skips(opt_state)
    record = {"step": done, "split": "train", "loss": loss,
              "step_time_s": dt, "skipped": in_a_row > 0}
    if lr_schedule is not None:
      record["lr"] = float(lr_schedule(step))
    log.write(record)
    if in_a_row and in_a_row >= tc.max_consecutive_skips:
      diverged = True
      bar.message(f"{name}: {in_a_row} steps in a row had "
                f"non-finite gradients (up to step {done}); stopping this "
                f"run.")
      break
    if not np.isfinite(loss) and not in_a_row:
      diverged = True
      bar.message(f"{name}: training loss is {loss} at step "
                f"{done}; stopping this run.")
      break
    if done % tc.eval_every == 0 or done == tc.steps:
      val = evaluate(params, task.eval_batches)
      log.write({"step": done, "split": "val", **val})
      postfix["val"] = f"{val['loss']:.4f}"
    if done % tc.log_every == 0 or done == tc.steps:
      postfix["loss"] = f"{loss:.4f}"
      postfix[f"{task.info['unit']}/s"] = f"{items / dt:,.0f}"
      bar.log(done, postfix)
    if ckpt is not None:
      ckpt.maybe_save(done, params, opt_state)
    bar.advance()
  bar.close()
  if ckpt is not None:
    ckpt.close()

  summary = summarize(
      log.read(), optimizer=name, seed=config.seed,
      learning_rate=config.optimizer.learning_rate if tx is None else None,
      params=n_params,
      state_bytes=state_bytes, state_bytes_per_param=state_bytes / n_params,
      matrix_params=split["matrix_params"],
      matrix_state_bytes=split["matrix_state_bytes"],
      state_bytes_per_matrix_param=(split["matrix_state_bytes"]
                                    / max(split["matrix_params"], 1)),
      other_params=split["other_params"],
      other_state_bytes=split["other_state_bytes"],
      compiled_step_memory_bytes=memory["total"],
      compiled_step_memory=memory, task=task.info, diverged=diverged)
  if diverged:
    summary["final_val_loss"] = summary["best_val_loss"] = float("nan")
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  return Trained(summary, params, opt_state,
                 dataclasses.replace(run, params=params, opt_state=opt_state))


def command(config: ml_collections.ConfigDict, workdir: str,
            resume: bool) -> None:
  """Runs one training run and prints its summary.

  Args:
    config: the loaded config.
    workdir: the output directory.
    resume: continue from the newest checkpoint.
  """
  check(config)
  summary = train(config, workdir, resume=resume)
  brief = {k: v for k, v in summary.items() if not k.endswith("_curve")}
  print(json.dumps(brief, indent=1))


def main() -> None:
  """``quantmuon-train``: one run from a config file."""
  cli.run(command, "train")


if __name__ == "__main__":
  main()
