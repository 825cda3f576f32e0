"""Which parameters Muon takes, which go to AdamW, and how Muon views the
ones that are not plain matrices.

The rules read a parameter's path: its *name* (the last path component,
``kernel``, ``bias``, ``embedding``, ...) and its *owner* (the component
before it, the module that holds it). Names are compared in lower case and
split at underscores into tokens.

- AdamW takes, whatever their rank:
  - biases and scales: a name ``bias`` or ``scale``;
  - embeddings: a name or owner that is ``wte``, ``wpe`` or
    ``embed_tokens``, or whose last token is ``emb``, ``embed``, ``embeds``,
    ``embedding`` or ``embeddings`` (``embed``, ``pos_embedding``,
    ``token_emb``; not ``embed_proj``, a projection);
  - output heads: a 2-D leaf whose name or owner is ``classifier``,
    ``unembed`` or ``logits``, or ends in the token ``head`` (``head``,
    ``lm_head``); or whose path starts with ``output`` or ``out`` (LLaMA's
    head; a leading ``params`` is skipped). Deeper down, ``out`` and
    ``output`` are projections (an attention block's ``out``, BERT's
    ``attention.output.dense``), which Muon takes;
  - every leaf of rank < 2.
- Muon takes every other matrix, and a leaf of rank > 2 that has dimension
  numbers (given, or the defaults of :func:`default_dimension_numbers`).
- The remaining leaves of rank > 2 go to AdamW, as in
  ``optax.contrib.muon``.

``labels=`` on every preset overrides all of this (a tree or a callable).
MuonQ's code matches embeddings by substring; matching tokens instead keeps
``embed_proj`` with Muon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from optax.contrib import MuonDimensionNumbers

from quantmuon.transforms import _tree

MUON, ADAM = "muon", "adam"
ADAM_LEAF_NAMES = ("bias", "scale")
EMBEDDING_NAMES = ("wte", "wpe", "embed_tokens")
EMBEDDING_TOKENS = ("emb", "embed", "embeds", "embedding", "embeddings")
HEAD_NAMES = ("classifier", "unembed", "logits")
TOP_LEVEL_HEAD_NAMES = ("output", "out")
ATTENTION_INPUTS = ("query", "key", "value")


def _component_names(path: tuple) -> list[str]:
  """Lower-case names on a path. A trailing ``.value`` is the attribute
  under which a ``flax.nnx.Variable`` holds its array (``nnx.state``
  trees), not a name of the parameter."""
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey) \
      and path[-1].name == "value":
    path = path[:-1]
  names = []
  for key in path:
    for attr in ("key", "name"):
      value = getattr(key, attr, None)
      if isinstance(value, str):
        names.append(value.lower())
  return names


def _name_and_owner(path: tuple) -> tuple[str | None, str | None]:
  names = _component_names(path)
  return (names[-1] if names else None,
          names[-2] if len(names) > 1 else None)


def _is_embedding_name(name: str | None) -> bool:
  return name is not None and (
      name in EMBEDDING_NAMES or name.split("_")[-1] in EMBEDDING_TOKENS)


def _is_head_name(name: str | None) -> bool:
  return name is not None and (
      name in HEAD_NAMES or name.split("_")[-1] == "head")


def is_adam_path(path: tuple, ndim: int = 2) -> bool:
  """Whether a path names a bias, a scale, an embedding or an output head.

  Args:
    path: the leaf's key path.
    ndim: the leaf's rank (heads are matrices; see the module docstring).

  Returns:
    True when the rules of this module send the leaf to AdamW by name.
  """
  name, owner = _name_and_owner(path)
  if name in ADAM_LEAF_NAMES:
    return True
  if _is_embedding_name(name) or _is_embedding_name(owner):
    return True
  if ndim != 2:
    return False
  top = next((n for n in _component_names(path) if n != "params"), None)
  return (_is_head_name(name) or _is_head_name(owner)
          or top in TOP_LEVEL_HEAD_NAMES)


def leaf_dimension_numbers(path: tuple, ndim: int
                           ) -> MuonDimensionNumbers | None:
  """How Muon views a leaf of rank > 2 by default, or None.

  - Flax attention's ``query`` / ``key`` / ``value`` kernels,
    ``(in, heads, head_dim)``: reduction axis 0, output axes (1, 2).
  - Its ``out`` kernel, ``(heads, head_dim, out)``: reduction axes (0, 1),
    output axis 2.
  - Any other ``kernel`` (convolutions ``(*window, in, out)``, Flax
    ``LinearGeneral``): the last axis is the output, the others are reduced,
    as Keller Jordan's Muon views a conv filter as ``(out, -1)``.

  Args:
    path: the leaf's key path.
    ndim: the leaf's rank.

  Returns:
    ``MuonDimensionNumbers``, or None for matrices and unknown leaves.
  """
  name, owner = _name_and_owner(path)
  if ndim <= 2 or name != "kernel":
    return None
  if ndim == 3 and owner in ATTENTION_INPUTS:
    return MuonDimensionNumbers(reduction_axis=(0,), output_axis=(1, 2))
  return MuonDimensionNumbers(reduction_axis=tuple(range(ndim - 1)),
                              output_axis=(ndim - 1,))


def default_dimension_numbers(params: Any) -> Any:
  """:func:`leaf_dimension_numbers` of every leaf of ``params``.

  Args:
    params: a parameter (or updates) tree.

  Returns:
    A tree of ``MuonDimensionNumbers`` or None, shaped like ``params``.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, p: leaf_dimension_numbers(path, p.ndim), params)


def muon_labels(params: Any, dimension_numbers: Any = None) -> Any:
  """Labels every leaf "muon" or "adam" by the rules of this module.

  Args:
    params: a parameter tree (arrays or ``jax.ShapeDtypeStruct``).
    dimension_numbers: the user's dimension numbers (one, a tree or a
      callable, as for :func:`quantmuon.orthogonalize`); None uses
      :func:`default_dimension_numbers`. A leaf of rank > 2 goes to Muon
      when it has dimension numbers.

  Returns:
    A tree of the same structure whose leaves are ``"muon"`` or ``"adam"``.
  """
  lookup = _tree.dimension_numbers_by_path(
      default_dimension_numbers if dimension_numbers is None
      else dimension_numbers, params)

  def label(path, p):
    if p.ndim < 2 or is_adam_path(path, p.ndim):
      return ADAM
    if p.ndim == 2 or lookup(path) is not None:
      return MUON
    return ADAM

  return jax.tree_util.tree_map_with_path(label, params)


def resolve_labels(labels: Callable[[Any], Any] | Any | None,
                   dimension_numbers: Any = None) -> Callable[[Any], Any]:
  """A label function from None (the default), a callable or a tree."""
  if labels is None:
    return lambda params: muon_labels(params, dimension_numbers)
  if callable(labels):
    return labels
  return lambda params: labels
