"""flax serialization of stored values, registered without importing flax.

``flax.serialization.to_bytes(state)`` (flax's msgpack checkpoints) needs
every custom pytree node of the state registered with
``flax.serialization.register_serialization_state``. The library does not
depend on flax, so the registration waits for flax: :func:`when_imported`
runs it at once when ``flax.serialization`` is already imported, and
otherwise as soon as it is, through an import hook that does nothing else
(it steps aside after that import). ``import quantmuon`` imports no flax.

A ``Stored`` value's state dict is keyed as its key path is (``codes@
Blockwise-3f0a6c1e``, see :func:`quantmuon.formats.stored.format_tag`), so
bytes written in one format do not restore into a target of another: the
restore raises an error that names the path and both formats.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from quantmuon.formats import stored as stored_lib
from quantmuon.formats.stored import Stored

FLAX = "flax.serialization"
# Module name -> what to run once it is imported.
_PENDING: dict[str, list[Callable[[ModuleType], None]]] = {}


def when_imported(name: str, callback: Callable[[ModuleType], None]) -> None:
  """Runs ``callback(module)`` once the module ``name`` is imported.

  At once when it already is; otherwise right after its import, wherever
  that import happens. A callback that raises does not break the import:
  it becomes a warning.

  Args:
    name: a module's full name (``flax.serialization``).
    callback: what to run with the module.
  """
  module = sys.modules.get(name)
  if module is not None:
    _run(callback, module)
    return
  _PENDING.setdefault(name, []).append(callback)
  if _FINDER not in sys.meta_path:
    sys.meta_path.insert(0, _FINDER)


def _run(callback: Callable[[ModuleType], None], module: ModuleType) -> None:
  try:
    callback(module)
  except Exception as e:  # noqa: BLE001 - never fail the user's import
    warnings.warn(f"quantmuon could not register with {module.__name__}: "
                  f"{e!r}", stacklevel=2)


class _AfterImport(importlib.abc.MetaPathFinder):
  """Finds a pending module with the other finders and wraps its loader
  so that the callbacks run after the module executes."""

  def find_spec(self, fullname: str, path: Any, target: Any = None
                ) -> importlib.machinery.ModuleSpec | None:
    if fullname not in _PENDING:
      return None
    for finder in sys.meta_path:
      find = getattr(finder, "find_spec", None)
      if finder is self or find is None:
        continue
      spec = find(fullname, path, target)
      if spec is not None:
        break
    else:
      return None
    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
      spec.loader = _ThenCall(spec.loader)
    return spec


class _ThenCall(importlib.abc.Loader):
  """A loader that executes the module with ``loader``, puts ``loader``
  back in the module's spec, then runs the module's pending callbacks."""

  def __init__(self, loader: Any):
    self._loader = loader

  def create_module(self, spec: importlib.machinery.ModuleSpec
                    ) -> ModuleType | None:
    return self._loader.create_module(spec)

  def exec_module(self, module: ModuleType) -> None:
    module.__loader__ = module.__spec__.loader = self._loader
    self._loader.exec_module(module)
    for callback in _PENDING.pop(module.__name__, []):
      _run(callback, module)
    if not _PENDING and _FINDER in sys.meta_path:
      sys.meta_path.remove(_FINDER)

  def __getattr__(self, name: str) -> Any:
    return getattr(self._loader, name)


_FINDER = _AfterImport()


def _stored_state_dict(flax: ModuleType, value: Stored) -> dict[str, Any]:
  return {stored_lib.part_key(name, value.format): flax.to_state_dict(part)
          for name, part in value.parts.items()}


def _stored_from_state_dict(flax: ModuleType, target: Stored,
                            state: dict[str, Any]) -> Stored:
  """``target`` with its parts read from ``state``, after checking that
  ``state`` was written in ``target``'s format and shapes."""
  keys = {stored_lib.part_key(name, target.format): name
          for name in target.parts}
  if set(state) != set(keys):
    tags = sorted({str(stored_lib.split_part_key(k)[1]) for k in state})
    raise ValueError(
        f"flax.serialization: at {flax.current_path()}, the state was "
        f"saved in a format tagged {', '.join(tags)}, and the target is "
        f"{target.format!r} (tag {stored_lib.format_tag(target.format)}); "
        "restore it into the optimizer built with the settings it was "
        "saved with.")
  parts = {}
  for key, name in keys.items():
    want, value = target.parts[name], state[key]
    parts[name] = flax.from_state_dict(want, value, name=key)
    if not isinstance(want, Stored) and (
        np.shape(value) != tuple(want.shape)
        or np.dtype(value.dtype) != np.dtype(want.dtype)):
      raise ValueError(
          f"flax.serialization: at {flax.current_path()}/{key}, the state "
          f"holds {value.dtype}{list(np.shape(value))} where the target "
          f"holds {want.dtype}{list(want.shape)}; restore it into the "
          "optimizer and parameters it was saved with.")
  return Stored(parts, target.format, target.shape, target.dtype)


def register_stored(flax: ModuleType) -> None:
  """Registers :class:`Stored` with the module ``flax.serialization``."""
  flax.register_serialization_state(
      Stored, lambda v: _stored_state_dict(flax, v),
      lambda t, s: _stored_from_state_dict(flax, t, s), override=True)


when_imported(FLAX, register_stored)
