"""Which parameters Muon takes and which go to AdamW."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

MUON, ADAM = "muon", "adam"
ADAM_NAMES = ("wte", "wpe", "lm_head", "head")


def _component_names(path: tuple) -> list[str]:
  names = []
  for key in path:
    for attr in ("key", "name"):
      value = getattr(key, attr, None)
      if isinstance(value, str):
        names.append(value.lower())
  return names


def is_adam_path(path: tuple) -> bool:
  """Whether a parameter path names an embedding or an output head.

  A path component named ``embed*`` (embed, embedding, embed_tokens, ...),
  ``wte``, ``wpe``, ``lm_head`` or ``head`` marks it, as in MuonQ's code.
  """
  return any(name.startswith("embed") or name in ADAM_NAMES
             for name in _component_names(path))


def muon_labels(params: Any) -> Any:
  """Labels every leaf "muon" or "adam".

  AdamW takes every leaf of rank < 2 (norms, biases, scalars) and every leaf
  under an embedding or output-head path (see :func:`is_adam_path`); Muon
  takes the other matrices and higher-rank kernels.

  Args:
    params: a parameter tree (arrays or ``jax.ShapeDtypeStruct``).

  Returns:
    A tree of the same structure whose leaves are ``"muon"`` or ``"adam"``.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, p: ADAM if p.ndim < 2 or is_adam_path(path) else MUON,
      params)


def resolve_labels(labels: Callable[[Any], Any] | Any | None
                   ) -> Callable[[Any], Any]:
  """A label function from None (the default), a callable or a tree."""
  if labels is None:
    return muon_labels
  if callable(labels):
    return labels
  return lambda params: labels
