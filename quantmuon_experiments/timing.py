"""Step times measured apart from training: warmed up, interleaved, repeated.

Timing the training loop's own steps mixes in compilation, evaluation and
whatever else the machine did while one optimizer trained. Here every
optimizer's compiled step is first called ``warmup`` times; then, in each of
``repeats`` rounds, every optimizer runs ``steps`` steps in turn (the order
rotates by one each round), so that a slow moment of the machine falls on
all of them alike. A round's time is its mean step time; the report gives
the median over rounds and the spread (min to max).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from quantmuon_experiments import errors
from quantmuon_experiments.train import Setup


def stepper(run: Setup) -> Callable[[], None]:
  """A function that runs one training step of ``run`` and waits for it.

  The step's outputs feed the next call (the step donates its inputs); the
  batch is step 0's, put on the device (or the mesh) once.

  Args:
    run: a ``train.setup`` result.

  Returns:
    A function of no arguments.
  """
  batch = jax.device_put(
      run.task.train_batch(0),
      None if run.placement is None else run.placement.batch)
  carry = [run.params, run.opt_state]

  def step() -> None:
    params, opt_state, out = run.step(carry[0], carry[1], batch)
    jax.block_until_ready((params, opt_state, out))
    carry[:] = [params, opt_state]

  return step


def round_robin(steps: dict[str, Callable[[], None]], *, warmup: int,
                repeats: int, calls: int,
                progress: Callable[[int], None] | None = None
                ) -> dict[str, list[float]]:
  """Times each function ``calls`` times a round, interleaving them.

  Args:
    steps: name -> a function that runs one step and waits for it.
    warmup: untimed calls of each function first.
    repeats: rounds; each round times every function once, in an order
      rotated by one from the previous round's.
    calls: calls per function per round.
    progress: called with the number of calls made so far, after each
      function's warmup and each timed block (outside the timed span).

  Returns:
    name -> the mean seconds per call of each round, in round order.
  """
  names = list(steps)
  made = 0
  tell = progress or (lambda _: None)
  for name in names:
    for _ in range(warmup):
      steps[name]()
    made += warmup
    tell(made)
  times: dict[str, list[float]] = {name: [] for name in names}
  for r in range(repeats):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      start = time.perf_counter()
      for _ in range(calls):
        steps[name]()
      times[name].append((time.perf_counter() - start) / calls)
      made += calls
      tell(made)
  return times


def calls_of(config: ml_collections.ConfigDict, optimizers: int) -> int:
  """The step calls ``round_robin`` makes for ``config.timing``.

  Args:
    config: the comparison config.
    optimizers: how many optimizers are timed.

  Returns:
    ``optimizers * (warmup + repeats * steps)``.
  """
  t = config.timing
  return optimizers * (int(t.warmup) + int(t.repeats) * int(t.steps))


def spread(values: list[float]) -> dict[str, float]:
  """Median, minimum and maximum of ``values``.

  Args:
    values: one number per round.

  Returns:
    ``median``, ``min`` and ``max``.
  """
  return {"median": float(np.median(values)), "min": float(np.min(values)),
          "max": float(np.max(values))}


def paired_ratios(times: list[float], reference: list[float]
                  ) -> dict[str, float]:
  """The spread of per-round ratios ``times[r] / reference[r]``.

  Rounds pair the two: both ran in the same round, close in time.

  Args:
    times: an optimizer's seconds per step, per round.
    reference: the reference's, same rounds.

  Returns:
    ``spread`` of the ratios.
  """
  return spread([t / r for t, r in zip(times, reference, strict=True)])


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` unless ``config.timing`` can time anything.

  Args:
    config: the comparison config; ``timing`` holds ``warmup`` (>= 0),
      ``repeats`` and ``steps`` (>= 1).
  """
  t = config.timing
  for field, least in (("warmup", 0), ("repeats", 1), ("steps", 1)):
    if int(t[field]) < least:
      raise errors.ConfigError(
          f"config.timing.{field} must be at least {least}, got "
          f"{t[field]}; set --config.timing.{field}={max(least, 1)}.")
