"""Which parameters Muon takes, which go to AdamW, and how Muon sees each
one as a batch of matrices.

The rules read a parameter's path (its *name*, the last component:
``kernel``, ``bias``, ``embedding``, ...; its *owner*, the module that holds
it; names are compared in lower case and split at underscores into
tokens), its shape, and the axis names its metadata carries, if any.

Labels:

- AdamW takes biases and scales (a name ``bias`` or ``scale``),
  embeddings (a name or owner ``wte``, ``wpe``, ``embed_tokens``, or whose
  last token is ``emb``, ``embed``, ``embeds``, ``embedding`` or
  ``embeddings``), output heads (a matrix whose name or owner is
  ``classifier``, ``unembed`` or ``logits`` or ends in the token ``head``,
  or whose path starts with ``output`` or ``out``; deeper down these are
  projections), and every leaf that is not a matrix or a stack of them.
- Muon takes every other matrix and every leaf it can see as a batch of
  matrices (below).

Views (:class:`~quantmuon.formats.matrix_view.MatrixView`):

1. ``dimension_numbers`` given for the leaf: as optax, the axes neither
   reduced nor output are batch axes.
2. Stack axes: the leaf's *declared* stack axes are batch axes, and what
   remains is seen by the rules below (a remaining matrix as itself; a
   remaining vector sends the leaf to AdamW). Stack axes are declared by
   ``stack_axes`` (a path component's name -> its axis, e.g.
   ``{"layers": 0}`` for ``nnx.vmap``/``nn.scan`` stacks under
   ``layers``, ``{"layers": 1}`` for MaxText's layout, ``{"experts": 0}``
   for MoE experts), or by axis names in the parameters' metadata: Flax
   NNX ``out_sharding`` / ``sharding_names`` (``nnx.vmap`` with
   ``transform_metadata={nnx.PARTITION_NAME: "layers"}``) and linen
   ``nn.Partitioned`` / ``LogicallyPartitioned`` names (``nn.scan`` with
   ``metadata_params``) whose name is in ``STACK_NAMES``.
3. A matrix is itself. Flax attention kernels (owner ``query``, ``key``
   or ``value``: ``(in, heads, head_dim)``, seen as ``in x heads *
   head_dim``; owner ``out``: ``(heads, head_dim, out)``) and convolution
   filters (a ``kernel`` whose owner's name contains ``conv``, or a
   top-level ``kernel``: ``(*window, in, out)``, seen as ``window * in x
   out``) are recognized.
4. Anything else of rank > 2 is ambiguous: a stack of scanned layers or
   experts looks like a convolution or an attention kernel. An undeclared
   leaf under a path that names a stack (a component such as ``layers``,
   ``blocks``, ``ScanBlock``, ``experts``, ``moe`` that is not one of a
   list: ``blocks/0/...`` and ``layers_0`` are separate layers), even one
   that looks like a kernel of kind 3, and any other ``kernel`` stop
   ``init`` with an error that names the fix; other raw arrays go to
   AdamW, as in ``optax.contrib.muon``.

So Muon never orthogonalizes a stack as one matrix unless told to.
``labels=`` overrides the labels, ``muon_weight_dimension_numbers``
(optax's argument) both labels and views.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from optax.contrib import MuonDimensionNumbers

from quantmuon.formats.matrix_view import MatrixView
from quantmuon.transforms import matrices

MUON, ADAM = "muon", "adam"
ADAM_LEAF_NAMES = ("bias", "scale")
EMBEDDING_NAMES = ("wte", "wpe", "embed_tokens")
EMBEDDING_TOKENS = ("emb", "embed", "embeds", "embedding", "embeddings")
HEAD_NAMES = ("classifier", "unembed", "logits")
TOP_LEVEL_HEAD_NAMES = ("output", "out")
ATTENTION_INPUTS = ("query", "key", "value")
ATTENTION_OUTPUT = "out"
# Axis names in parameter metadata that mark a stack of matrices.
STACK_NAMES = ("layers", "layer", "stage", "stages", "repeat", "experts",
               "expert", "exp", "num_experts")
# Tokens of path components that make an undeclared rank > 2 leaf an error
# rather than an AdamW leaf.
STACK_HINTS = ("layers", "layer", "blocks", "block", "stack", "scan",
               "experts", "expert", "moe")
StackAxes = (Mapping[str, int | Sequence[int]]
             | Callable[[tuple[str, ...], tuple[int, ...]],
                        Sequence[int] | None] | None)


class AmbiguousLeafError(ValueError):
  """A rank > 2 leaf whose matrices nothing declares."""


@dataclasses.dataclass(frozen=True)
class Route:
  """Where a leaf goes.

  Attributes:
    label: ``"muon"`` or ``"adam"``.
    view: Muon's view of the leaf (None for AdamW leaves).
  """
  label: str
  view: MatrixView | None = None


# --- paths and metadata ------------------------------------------------------

def _components(path: tuple) -> list[str | None]:
  """Lower-case names on a path, None for a list index. A trailing
  ``.value`` (a ``flax.nnx.Variable``'s or a linen box's array) is not a
  name of the parameter."""
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey) \
      and path[-1].name == "value":
    path = path[:-1]
  names: list[str | None] = []
  for key in path:
    value = getattr(key, "key", getattr(key, "name", None))
    names.append(value.lower() if isinstance(value, str) else None)
  return names


def _named(path: tuple) -> list[str]:
  return [n for n in _components(path) if n is not None]


def _name_and_owner(path: tuple) -> tuple[str | None, str | None]:
  names = _named(path)
  return (names[-1] if names else None,
          names[-2] if len(names) > 1 else None)


def _tokens(name: str) -> list[str]:
  return [t for t in re.split(r"[_\d]+", name) if t]


def _is_embedding_name(name: str | None) -> bool:
  return name is not None and (
      name in EMBEDDING_NAMES or name.split("_")[-1] in EMBEDDING_TOKENS)


def _is_head_name(name: str | None) -> bool:
  return name is not None and (
      name in HEAD_NAMES or name.split("_")[-1] == "head")


def _axis_names(node: Any) -> tuple | None:
  """Axis names that a Flax NNX variable or a linen box carries, or None.

  Read without importing flax: ``nnx.Variable`` metadata
  (``out_sharding``, ``sharding_names`` or ``sharding``) and linen's
  ``nn.Partitioned`` / ``LogicallyPartitioned`` ``names``.
  """
  nnx = sys.modules.get("flax.nnx")
  if nnx is not None and isinstance(node, nnx.Variable):
    metadata = node.get_metadata()
    for key in ("out_sharding", "sharding_names", "sharding"):
      names = metadata.get(key)
      if isinstance(names, tuple):
        return names
    return None
  meta = sys.modules.get("flax.core.meta")
  if meta is not None and isinstance(node, meta.AxisMetadata):
    names = getattr(node, "names", None)
    return tuple(names) if names is not None else None
  return None


def _is_box(node: Any) -> bool:
  nnx = sys.modules.get("flax.nnx")
  meta = sys.modules.get("flax.core.meta")
  return ((nnx is not None and isinstance(node, nnx.Variable))
          or (meta is not None and isinstance(node, meta.AxisMetadata)))


def _leaves(tree: Any) -> list[tuple[tuple, Any, tuple | None]]:
  """``(path, leaf, axis names)`` of every array leaf of ``tree``."""
  out = []
  for path, node in jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=_is_box)[0]:
    names = _axis_names(node)
    if _is_box(node):
      for sub, leaf in jax.tree_util.tree_flatten_with_path(node)[0]:
        out.append((path + sub, leaf, names))
    else:
      out.append((path, node, None))
  return out


# --- labels by name ---------------------------------------------------------

def is_adam_path(path: tuple, ndim: int = 2) -> bool:
  """Whether a path names a bias, a scale, an embedding or an output head.

  Args:
    path: the leaf's key path.
    ndim: the rank of the leaf's matrices (heads are matrices).

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
  components = _components(path)
  top = next((n for n in components if n != "params"), None)
  return (_is_head_name(name) or _is_head_name(owner)
          or top in TOP_LEVEL_HEAD_NAMES)


# --- views --------------------------------------------------------------------

def _declared_stack(path: tuple, shape: tuple[int, ...],
                    names: tuple | None, stack_axes: StackAxes
                    ) -> tuple[int, ...]:
  """The leaf's declared stack axes (ascending), or ()."""
  ndim = len(shape)
  axes: set[int] = set()
  if callable(stack_axes):
    found = stack_axes(tuple(_named(path)), tuple(shape))
    axes.update(int(a) % ndim for a in (found or ()))
  elif stack_axes:
    components = set(_named(path))
    for key, value in stack_axes.items():
      if key.lower() in components:
        for a in ((value,) if isinstance(value, int) else value):
          if not -ndim <= a < ndim:
            raise ValueError(
                f"stack_axes[{key!r}] = {value!r} is out of range for "
                f"{jax.tree_util.keystr(path)} of shape {tuple(shape)}.")
          axes.add(int(a) % ndim)
  if names is not None and len(names) == ndim:
    axes.update(i for i, n in enumerate(names)
                if isinstance(n, str) and n.lower() in STACK_NAMES)
  return tuple(sorted(axes))


def _known_view(path: tuple, shape: tuple[int, ...]) -> MatrixView | None:
  """The view of an unstacked leaf by the rules of kind 3, or None."""
  ndim = len(shape)
  if ndim == 2:
    return MatrixView.matrix()
  name, owner = _name_and_owner(path)
  if ndim == 3 and owner in ATTENTION_INPUTS:
    return MatrixView.of(3, (0,), (1, 2))
  if ndim == 3 and owner == ATTENTION_OUTPUT:
    return MatrixView.of(3, (0, 1), (2,))
  if name == "kernel" and (owner is None or "conv" in owner) \
      and 3 <= ndim <= 5:
    return MatrixView.of(ndim, tuple(range(ndim - 1)), (ndim - 1,))
  return None


def _lift(view: MatrixView, kept: Sequence[int], stack: Sequence[int],
          ndim: int) -> MatrixView:
  """A view of the leaf with its stack axes removed, as a view of the
  whole leaf with the stack axes as batch axes."""
  return MatrixView(
      tuple(sorted(set(stack) | {kept[a] for a in view.batch})),
      tuple(kept[a] for a in view.reduction),
      tuple(kept[a] for a in view.output))


def _ambiguous_message(path: tuple, shape: tuple[int, ...]) -> str:
  where = jax.tree_util.keystr(path)
  first = next((n for n in _named(path) if n != "params"), "layers")
  return (
      f"cannot tell how Muon should see {where} of shape {tuple(shape)}: "
      f"a stack of {shape[0]} scanned layers or experts looks like one "
      "convolution or attention kernel. Declare it: stack_axes="
      f"{{{first!r}: 0}} (the path component and axis of the stack), "
      "dimension_numbers=... (optax MuonDimensionNumbers), or labels=... "
      "to send it to AdamW.")


def _hinted(path: tuple) -> bool:
  """Whether a path names a stack: a component with a token of
  ``STACK_HINTS`` (``layers``, ``ScanBlock``, ``experts``, ...) that is
  not one of a list of modules (no index follows it, no digits end it:
  ``blocks/0/...`` and ``layers_0`` are separate layers)."""
  components = _components(path)
  for j, name in enumerate(components):
    if name is None or name[-1].isdigit():
      continue
    indexed = j + 1 < len(components) and components[j + 1] is None
    if not indexed and any(t in STACK_HINTS for t in _tokens(name)):
      return True
  return False


def view_of(path: tuple, shape: tuple[int, ...], *, names: tuple | None,
            dim_nums: MuonDimensionNumbers | None,
            stack_axes: StackAxes) -> MatrixView | None:
  """Muon's view of one leaf, or None when it is no matrix.

  Args:
    path: the leaf's key path.
    shape: its shape.
    names: axis names from its metadata, or None.
    dim_nums: the user's dimension numbers for it, or None.
    stack_axes: as for :func:`routes`.

  Returns:
    The view (kinds 1 to 3 of the module docstring), or None for a leaf of
    rank < 2, a stack of vectors, or an undeclared raw array.

  Raises:
    AmbiguousLeafError: for an undeclared rank > 2 ``kernel`` or a leaf
      under a path that names layers or experts (kind 4).
  """
  ndim = len(shape)
  if dim_nums is not None:
    return MatrixView.of(ndim, dim_nums.reduction_axis, dim_nums.output_axis)
  stack = _declared_stack(path, shape, names, stack_axes)
  kept = [a for a in range(ndim) if a not in stack]
  if len(kept) < 2:
    return None
  undeclared = len(kept) == ndim
  if undeclared and ndim > 2 and _hinted(path):
    raise AmbiguousLeafError(_ambiguous_message(path, shape))
  inner = _known_view(path, tuple(shape[a] for a in kept))
  if inner is None and undeclared:
    if _name_and_owner(path)[0] == "kernel":
      raise AmbiguousLeafError(_ambiguous_message(path, shape))
    return None
  if inner is None:
    raise AmbiguousLeafError(
        f"{jax.tree_util.keystr(path)} of shape {tuple(shape)}: after its "
        f"stack axes {stack}, the rest {tuple(shape[a] for a in kept)} is "
        "no matrix Muon knows; give it dimension_numbers=... or declare "
        "more stack_axes.")
  return _lift(inner, kept, stack, ndim)


def _user_dims(dimension_numbers: Any, tree: Any
               ) -> Callable[[tuple], MuonDimensionNumbers | None]:
  """Lookup by path of the user's dimension numbers (None when not given)."""
  if dimension_numbers is None:
    return lambda path: None
  return matrices.dimension_numbers_by_path(dimension_numbers, tree)


def _check_attention(path: tuple, shape: tuple[int, ...],
                     shapes: Mapping[tuple, tuple[int, ...]]) -> None:
  """An unstacked Flax attention kernel is checked against its sibling:
  a query/key/value ``(in, heads, head_dim)`` against the ``out`` kernel
  ``(heads, head_dim, out)`` of the same module, which a stack of plain
  projections named alike would not match."""
  name, owner = _name_and_owner(path)
  named = tuple(_named(path))
  module = named[:-2]
  if owner in ATTENTION_INPUTS:
    other = shapes.get(module + (ATTENTION_OUTPUT, name))
    ok = other is not None and tuple(other[:2]) == tuple(shape[1:])
  else:
    other = next((shapes[module + (q, name)] for q in ATTENTION_INPUTS
                  if module + (q, name) in shapes), None)
    ok = other is not None and tuple(other[1:]) == tuple(shape[:2])
  if not ok:
    raise AmbiguousLeafError(_ambiguous_message(path, shape))


def routes(params: Any, *, labels: Any = None, dimension_numbers: Any = None,
           stack_axes: StackAxes = None,
           muon_weight_dimension_numbers: Any = None,
           check: bool = False) -> Any:
  """The :class:`Route` of every leaf of ``params``.

  Args:
    params: a parameter (or updates) tree: arrays or
      ``jax.ShapeDtypeStruct``, possibly in ``flax.nnx.Variable`` or linen
      ``nn.Partitioned`` wrappers, whose axis names are read.
    labels: None (the rules), a tree of ``"muon"``/``"adam"`` or a
      callable of ``params`` returning one.
    dimension_numbers: the user's ``MuonDimensionNumbers``: one for every
      Muon leaf, a tree (None: the rules), or a callable of ``params``.
    stack_axes: a mapping from a path component's name to the axis (or
      axes) it stacks, or a callable ``(names on the path, shape) -> axes
      or None``.
    muon_weight_dimension_numbers: ``optax.contrib.muon``'s argument: a
      ``MuonDimensionNumbers``, a tree of them (None: AdamW) or a callable;
      when given it decides both labels and views, as in optax.
    check: also check what only the whole tree shows (unstacked attention
      kernels against their siblings), as ``init`` does.

  Returns:
    A tree of ``Route`` with the structure of ``params``' arrays.

  Raises:
    AmbiguousLeafError: naming every leaf that needs a declaration.
    ValueError: for labels other than ``"muon"`` and ``"adam"``, or a
      Muon label on a leaf that is no matrix.
  """
  leaves = _leaves(params)
  treedef = jax.tree.structure(params)
  if muon_weight_dimension_numbers is not None:
    return treedef.unflatten(_optax_routes(muon_weight_dimension_numbers,
                                           params, leaves))
  user = _user_dims(dimension_numbers, params)
  given = None if labels is None else jax.tree.leaves(
      labels(params) if callable(labels) else labels)
  shapes = {tuple(_named(path)): tuple(leaf.shape)
            for path, leaf, _ in leaves}
  out, errors = [], []
  for i, (path, leaf, names) in enumerate(leaves):
    try:
      out.append(_route(path, leaf, names, user(path), stack_axes,
                        None if given is None else given[i], check, shapes))
    except AmbiguousLeafError as err:
      errors.append(str(err))
      out.append(Route(ADAM))
  if errors:
    raise AmbiguousLeafError(" ".join(errors))
  return treedef.unflatten(out)


def _route(path: tuple, leaf: Any, names: tuple | None,
           dim_nums: MuonDimensionNumbers | None, stack_axes: StackAxes,
           label: str | None, check: bool,
           shapes: Mapping[tuple, tuple[int, ...]]) -> Route:
  where = jax.tree_util.keystr(path)
  if label is not None and label not in (MUON, ADAM):
    raise ValueError(f"labels must be 'muon' or 'adam', got {label!r} at "
                     f"{where}.")
  shape = tuple(leaf.shape)
  if not jnp.issubdtype(leaf.dtype, jnp.floating):
    raise ValueError(
        f"{where} has dtype {leaf.dtype}: Muon and AdamW update "
        "floating-point parameters only (its gradient would be float0); "
        "leave it out of the optimized tree, e.g. "
        "nnx.Optimizer(model, tx, wrt=nnx.Param).")
  if label == ADAM:
    return Route(ADAM)
  if label is None:
    name, owner = _name_and_owner(path)
    if len(shape) < 2 or name in ADAM_LEAF_NAMES or _is_embedding_name(
        name) or _is_embedding_name(owner):
      return Route(ADAM)
  view = view_of(path, shape, names=names, dim_nums=dim_nums,
                 stack_axes=stack_axes)
  if view is None:
    if label == MUON:
      raise ValueError(
          f"{where}: a leaf of shape {shape} is not a matrix: give it "
          "MuonDimensionNumbers (dimension_numbers=...) or route it to AdamW "
          "(labels=...).")
    return Route(ADAM)
  if label is None and len(shape) == 2 and is_adam_path(path, 2):
    return Route(ADAM)
  if check and dim_nums is None and not view.batch and len(shape) > 2:
    owner = _name_and_owner(path)[1]
    if len(shape) == 3 and owner in ATTENTION_INPUTS + (ATTENTION_OUTPUT,):
      _check_attention(path, shape, shapes)
    else:
      _check_conv(path, shape, shapes)
  return Route(MUON, view)


def _check_conv(path: tuple, shape: tuple[int, ...],
                shapes: Mapping[tuple, tuple[int, ...]]) -> None:
  """A convolution's bias is a vector; a stacked one's is not."""
  bias = shapes.get(tuple(_named(path))[:-1] + ("bias",))
  if bias is not None and len(bias) > 1:
    raise AmbiguousLeafError(_ambiguous_message(path, shape))


def _optax_routes(spec: Any, params: Any, leaves: list) -> list[Route]:
  """Routes from ``optax.contrib.muon``'s ``muon_weight_dimension_numbers``:
  a leaf with dimension numbers goes to Muon with them, a None one to
  AdamW."""
  if callable(spec) and not isinstance(spec, MuonDimensionNumbers):
    spec = spec(params)
  lookup = matrices.dimension_numbers_by_path(spec, params)
  single = isinstance(spec, MuonDimensionNumbers)
  out = []
  for path, leaf, _ in leaves:
    dim = spec if single else lookup(path)
    out.append(Route(ADAM) if dim is None else Route(
        MUON, MatrixView.of(len(leaf.shape), dim.reduction_axis,
                            dim.output_axis)))
  return out


# --- what the transforms take -------------------------------------------------

def muon_labels(params: Any, dimension_numbers: Any = None,
                stack_axes: StackAxes = None) -> Any:
  """Labels every leaf ``"muon"`` or ``"adam"`` by the rules of this module.

  Args:
    params: a parameter tree (arrays or ``jax.ShapeDtypeStruct``).
    dimension_numbers: the user's dimension numbers (one, a tree or a
      callable, as for :func:`quantmuon.transforms.orthogonalize`).
    stack_axes: as for :func:`routes`.

  Returns:
    A tree of the same structure whose leaves are ``"muon"`` or ``"adam"``.

  Raises:
    AmbiguousLeafError: for a leaf that needs a declaration.
  """
  return jax.tree.map(
      lambda r: r.label,
      routes(params, dimension_numbers=dimension_numbers,
             stack_axes=stack_axes),
      is_leaf=lambda x: isinstance(x, Route))


def to_dimension_numbers(view: MatrixView | None
                         ) -> MuonDimensionNumbers | None:
  """A view as optax's dimension numbers (None for a plain matrix)."""
  if view is None or view.is_matrix:
    return None
  return MuonDimensionNumbers(view.reduction, view.output)


def views(tree: Any, *, dimension_numbers: Any = None,
          stack_axes: StackAxes = None,
          muon_weight_dimension_numbers: Any = None) -> Any:
  """Muon's view of every leaf of ``tree`` that is a matrix or a stack of
  them (None for the others), whatever its label.

  Args:
    tree: a parameter or updates tree (the Muon transforms see it masked
      by ``optax.partition``).
    dimension_numbers, stack_axes, muon_weight_dimension_numbers: as for
      :func:`routes`.

  Returns:
    A tree of ``MatrixView`` or None with the structure of ``tree``'s
    arrays.
  """
  leaves = _leaves(tree)
  treedef = jax.tree.structure(tree)
  if muon_weight_dimension_numbers is not None:
    return treedef.unflatten([r.view for r in _optax_routes(
        muon_weight_dimension_numbers, tree, leaves)])
  user = _user_dims(dimension_numbers, tree)
  return treedef.unflatten([
      None if len(leaf.shape) < 2 else view_of(
          path, tuple(leaf.shape), names=names, dim_nums=user(path),
          stack_axes=stack_axes)
      for path, leaf, names in leaves])


def route_fns(*, labels: Any = None, dimension_numbers: Any = None,
              stack_axes: StackAxes = None,
              muon_weight_dimension_numbers: Any = None
              ) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
  """The label function and the dimension-numbers function of a preset.

  Args:
    labels, dimension_numbers, stack_axes, muon_weight_dimension_numbers:
      as for :func:`routes`.

  Returns:
    ``(label_fn, dims_fn)``: ``label_fn(tree)`` gives the labels for
    ``optax.partition`` (and checks the whole tree, raising at ``init``
    for a leaf that needs a declaration); ``dims_fn(tree)`` the
    ``MuonDimensionNumbers`` of every leaf (None for plain matrices), for
    the Muon transforms, which see the tree masked.
  """
  def is_route(x):
    return isinstance(x, Route)

  def label_fn(tree):
    return jax.tree.map(
        lambda r: r.label,
        routes(tree, labels=labels, dimension_numbers=dimension_numbers,
               stack_axes=stack_axes, check=True,
               muon_weight_dimension_numbers=muon_weight_dimension_numbers),
        is_leaf=is_route)

  def dims_fn(tree):
    return jax.tree.map(
        to_dimension_numbers,
        views(tree, dimension_numbers=dimension_numbers,
              stack_axes=stack_axes,
              muon_weight_dimension_numbers=muon_weight_dimension_numbers),
        is_leaf=lambda x: x is None or isinstance(x, MatrixView))

  return label_fn, dims_fn
