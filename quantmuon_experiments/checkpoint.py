"""Orbax checkpoints of the parameters and the (quantized) optimizer state.

The optimizer state may hold custom pytree nodes (``quantmuon.formats.Stored``)
whose format lives in static aux data. Orbax stores only the arrays, so a
restore is given the abstract tree of a freshly initialized state as its
target: the structure (and every format) comes from the fresh state, the
values from the checkpoint.

A stored value's key path carries its format's tag
(``quantmuon.formats.stored.format_tag``), so Orbax refuses a target whose
formats differ from the checkpoint's. A save also records each tag's
format in the step's custom metadata, and :meth:`Checkpointer.restore`
checks the tags first, so that a resume after a change of format (another
codebook, companding, ...) stops with an error that names the leaf, both
formats and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp

from quantmuon.formats import stored as stored_lib

# The custom metadata entry of a step: format tag -> repr of the format.
FORMATS_KEY = "quantmuon_formats"


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _untagged(key: tuple[str, ...]) -> tuple[str, ...]:
  return tuple(stored_lib.split_part_key(k)[0] for k in key)


def format_mismatches(saved_keys: Any, target: Any,
                      saved_formats: Mapping[str, str] | None = None
                      ) -> list[str]:
  """Where a checkpoint holds a value in another format than ``target``.

  Args:
    saved_keys: the checkpoint's leaf key paths (tuples of names, as
      ``ocp.tree.to_flat_dict`` of its metadata tree gives them).
    target: the tree to restore into (its ``Stored`` values give the
      formats expected).
    saved_formats: format tag -> description, as saved (may be None).

  Returns:
    One line a value whose format differs (``path: saved X, now Y``),
    empty when the formats agree. Leaves that are missing on either side
    without a counterpart are left to Orbax's own check.
  """
  saved_formats = dict(saved_formats or {})
  expected = {tag: repr(fmt) for tag, fmt in
              stored_lib.formats_by_tag(target).items()}
  saved = {_untagged(k): k for k in saved_keys}
  lines: dict[tuple[str, ...], str] = {}
  for key in ocp.tree.to_flat_dict(target):
    other = saved.get(_untagged(key))
    if other is None or other == key:
      continue
    i = next(i for i, (a, b) in enumerate(zip(key, other, strict=True))
             if a != b)
    where = "/".join(key[:i]) or "/"
    was_tag, now_tag = (stored_lib.split_part_key(k[i])[1]
                        for k in (other, key))
    lines.setdefault(key[:i], (
        f"{where}: saved in "
        f"{saved_formats.get(was_tag, f'a format tagged {was_tag}')}, "
        f"now {expected.get(now_tag, now_tag)}"))
  return list(lines.values())


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
    # Naming the handler lets a fresh manager read a step's metadata.
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory), options=options,
        item_handlers=ocp.StandardCheckpointHandler())

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
    formats = {tag: repr(fmt) for tag, fmt in
               stored_lib.formats_by_tag(state).items()}
    return self._manager.save(step, args=ocp.args.StandardSave(state),
                              custom_metadata={FORMATS_KEY: formats},
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

    Raises:
      ValueError: when the checkpoint holds a value in another format than
        ``opt_state`` (the optimizer's settings changed since the save).
    """
    self._manager.wait_until_finished()
    target = _abstract({"params": params, "opt_state": opt_state})
    saved = ocp.tree.to_flat_dict(self._manager.item_metadata(step).tree)
    custom = self._manager.metadata(step).custom_metadata or {}
    differ = format_mismatches(saved, target, custom.get(FORMATS_KEY))
    if differ:
      shown = "; ".join(differ[:3]) + (
          f"; and {len(differ) - 3} more" if len(differ) > 3 else "")
      raise ValueError(
          f"Checkpointer.restore: the checkpoint of step {step} in "
          f"{self._manager.directory} stores optimizer state in other "
          f"formats than this optimizer, which would misread it: {shown}. "
          "Resume with the optimizer settings the checkpoint was written "
          "with, or start a fresh run (another workdir, or no --resume).")
    state = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    return state["params"], state["opt_state"]

  def close(self) -> None:
    """Waits for pending writes and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
