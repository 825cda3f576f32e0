"""Orbax checkpoints of the parameters and the (quantized) optimizer state.

The optimizer state may hold custom pytree nodes (``quantmuon.formats.Stored``)
whose format lives in static aux data. Orbax stores only the arrays, so a
restore is given the abstract tree of a freshly initialized state as its
target: the structure (and every format) comes from the fresh state, the
values from the checkpoint.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """Saves ``{"params", "opt_state"}`` every ``every`` steps.

  Args:
    directory: where the step directories go (created if missing).
    every: save interval in steps; 0 disables saving.
    max_to_keep: how many recent checkpoints to keep.
  """

  def __init__(self, directory: str | os.PathLike, every: int,
               max_to_keep: int = 2):
    self.every = int(every)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           create=True)
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory), options=options)

  def latest_step(self) -> int | None:
    """The step of the newest finished checkpoint, or None."""
    return self._manager.latest_step()

  def maybe_save(self, step: int, params: Any, opt_state: Any,
                 force: bool = False) -> bool:
    """Saves when ``step`` is a multiple of ``every`` (or ``force``).

    Args:
      step: the number of steps taken so far.
      params: the parameter tree.
      opt_state: the optimizer state.
      force: save regardless of the interval (still not when disabled).

    Returns:
      Whether a checkpoint was written.
    """
    if self.every <= 0 or (step % self.every and not force):
      return False
    if step in self._manager.all_steps():
      return False
    state = {"params": params, "opt_state": opt_state}
    return self._manager.save(step, args=ocp.args.StandardSave(state),
                              force=True)

  def restore(self, step: int, params: Any, opt_state: Any
              ) -> tuple[Any, Any]:
    """Reads a checkpoint into the structure of fresh params and state.

    Args:
      step: which checkpoint.
      params: freshly initialized params (only shapes and structure used).
      opt_state: the optimizer state initialized from them.

    Returns:
      ``(params, opt_state)`` as saved at ``step``.
    """
    self._manager.wait_until_finished()
    target = _abstract({"params": params, "opt_state": opt_state})
    state = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    return state["params"], state["opt_state"]

  def close(self) -> None:
    """Waits for pending writes and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
