"""Any optax optimizer's state, stored in a format between steps.

``quantize_state(optax.adamw(...), {"mu": Blockwise(8, "dynamic"), "nu":
Blockwise(8, "unsigned_dynamic")})`` is 8-bit AdamW (the bitsandbytes
recipe: dynamic maps, blocks of absmax scales, small tensors kept in
float32). Each step decodes the stored state, runs the inner optimizer in
full precision and encodes its new state, so only what is stored between
steps is quantized. With ``FloatingPoint`` formats it is the q_M / q_V
component of "A Convergence Analysis of Adaptive Optimizers under
Floating-point Quantization" (arXiv 2510.21314).

Second moments are non-negative and divide the update: store them with an
unsigned codebook (``unsigned_linear``, ``unsigned_dynamic``), whose levels
exclude zero, so that a positive value never decodes to zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from quantmuon import formats
from quantmuon.formats import placement, serialization
from quantmuon.transforms import fp
from quantmuon.transforms.options import static_int
from quantmuon.transforms.variables import without_variables

Array = jax.Array
StateFormat = (formats.Format | Mapping[str, formats.Format | None]
               | Callable[[tuple, Array], formats.Format | None])
STATE_STREAM = 3  # folded into the seed (fp.py uses 1 and 2)


@jax.tree_util.register_pytree_with_keys_class
class StoredLeaf:
  """One leaf of the inner state kept in a format by :func:`quantize_state`.

  A pytree node with one child, ``stored``; it marks which leaves the
  wrapper encoded (the inner state may hold ``formats.Stored`` of its own).
  ``depth`` (static) names the wrapper that owns it: 0 for a wrapper with
  no ``quantize_state`` inside its inner transform, else one more than the
  deepest one inside, so that a wrapper around another one decodes and
  encodes only its own leaves.
  """

  __slots__ = ("stored", "depth")

  def __init__(self, stored: formats.Stored, depth: int = 0):
    self.stored = stored
    self.depth = depth

  def tree_flatten_with_keys(self):
    return [(jax.tree_util.GetAttrKey("stored"), self.stored)], self.depth

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(children[0], aux)

  def __repr__(self) -> str:
    return f"StoredLeaf({self.stored!r}, depth={self.depth})"


def is_stored_leaf(x: Any) -> bool:
  return isinstance(x, StoredLeaf)


def _register_stored_leaf(flax: Any) -> None:
  """Registers :class:`StoredLeaf` with ``flax.serialization``: its state
  dict is its ``stored`` value's (see ``formats.serialization``)."""
  flax.register_serialization_state(
      StoredLeaf, lambda leaf: {"stored": flax.to_state_dict(leaf.stored)},
      lambda target, state: StoredLeaf(
          flax.from_state_dict(target.stored, state["stored"],
                               name="stored"), target.depth),
      override=True)


serialization.when_imported(serialization.FLAX, _register_stored_leaf)


class QuantizedState(NamedTuple):
  """State of :func:`quantize_state`.

  Attributes:
    count: steps taken (int32): the mantissa schedule's argument and the
      salt of the stochastic-rounding keys.
    inner: the inner optimizer's state, its quantized leaves replaced by
      ``StoredLeaf`` values.
  """
  count: chex.Array
  inner: Any


def quantize_state(
    inner: optax.GradientTransformation,
    state_format: StateFormat,
    *,
    min_size: int | None = None,
    mantissa_bits: fp.MantissaBits = None,
    seed: int | None = None,
) -> optax.GradientTransformationExtraArgs:
  """Stores the state of ``inner`` in a format between steps.

  Every floating-point leaf of the inner state with at least ``min_size``
  elements, for which ``state_format`` gives a format, is encoded after
  each update and decoded before the next; integer leaves (counts), small
  leaves, 0-D leaves, the ``hyperparams`` of ``optax.inject_hyperparams``
  and leaves given None stay as they are. The wrapped transform emits
  exactly the inner one's updates for the decoded state, so with
  ``formats.Float()`` it is bit-for-bit the inner optimizer. Wrappers nest
  (one per state field, each with its own ``mantissa_bits``): each one
  encodes only the leaves it names, leaving those of the wrappers inside.

  The state keeps its structure, shapes and dtypes from step to step, so
  it works under ``jax.jit``, ``jax.lax.cond``, ``optax.MultiSteps``,
  ``optax.apply_if_finite`` and ``optax.inject_hyperparams`` (as the inner
  transform or around it). During the update the decoded state is held in
  full precision.

  Args:
    inner: any optax transform (extra update arguments are passed on).
    state_format: one format for every eligible leaf; or a mapping from
      state field name (``"mu"``, ``"nu"``, ... : the name of the innermost
      NamedTuple field holding the leaf, found by matching the parameter
      paths at the end of the leaf's key path) to a format or None; or a
      callable ``(key_path, leaf) -> format | None`` called at ``init`` for
      each eligible leaf.
    min_size: leaves with fewer elements stay as they are (4096, as in
      bitsandbytes).
    mantissa_bits: overrides the mantissa width of ``FloatingPoint``
      formats (other formats ignore it): an int up to the format's own
      width, or a schedule of the step count (traced; clipped to the
      format's width), e.g. :func:`quantmuon.fp.log_mantissa_schedule`. The
      format's width is the storage width.
    seed: seed of the keys of formats that round stochastically; keys are
      folded with the step count and the leaf's position, so a resumed run
      draws the same keys.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    ``QuantizedState``.

  Raises:
    ValueError: for a ``state_format`` of the wrong kind, and at ``init``
      for a mapping naming a field the inner state does not have or an int
      ``mantissa_bits`` wider than a ``FloatingPoint`` format.
  """
  resolve = _resolver(state_format)
  min_size = static_int(min_size, "min_size", 4096)
  if min_size < 0:
    raise ValueError(f"min_size must be non-negative, got {min_size}.")
  seed = static_int(seed, "seed", 0)
  width = fp.mantissa_fn(mantissa_bits)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    params = without_variables(params)
    state = inner.init(params)
    fmts = resolve(state, params, min_size)
    if isinstance(mantissa_bits, int):
      for fmt in fmts:
        if isinstance(fmt, formats.FloatingPoint):
          fp.mantissa_fn(mantissa_bits, limit=fmt.mantissa_bits)
    count = jnp.zeros([], jnp.int32)
    leaves, treedef = jax.tree.flatten(state, is_leaf=is_stored_leaf)
    leaves = [x if fmt is None or p is None else _placed_like(x, p)
              for x, fmt, p in zip(leaves, fmts, _parameters_of(state, params),
                                   strict=True)]
    stored = _encode(leaves, fmts, count, count, _depth(state))
    return QuantizedState(count, treedef.unflatten(stored))

  def update_fn(updates, state, params=None, **extra_args):
    depth = _depth(state.inner)

    def own(x):
      return is_stored_leaf(x) and x.depth == depth

    decoded = jax.tree.map(lambda x: _decode(x) if own(x) else x,
                           state.inner, is_leaf=is_stored_leaf)
    # The state was built without flax Variables (see init_fn): the inner
    # optimizer sees plain trees, and the updates get their wrappers back.
    wrapped = jax.tree.structure(updates)
    updates, new = inner.update(
        without_variables(updates), decoded,
        without_variables(params), **extra_args)
    updates = wrapped.unflatten(jax.tree.leaves(updates))
    count = optax.safe_increment(state.count)
    previous = jax.tree.leaves(state.inner, is_leaf=is_stored_leaf)
    leaves, treedef = jax.tree.flatten(new, is_leaf=is_stored_leaf)
    fmts = [p.stored.format if own(p) else None for p in previous]
    dtypes = [p.stored.dtype if own(p) else None for p in previous]
    leaves = [x if d is None else x.astype(d)
              for x, d in zip(leaves, dtypes, strict=True)]
    stored = _encode(leaves, fmts, state.count, count, depth)
    return updates, QuantizedState(count, treedef.unflatten(stored))

  def _encode(leaves: list, fmts: list, step: Array, salt: Array,
              depth: int) -> list:
    """Encodes the leaves that have a format; ``step`` feeds the schedule,
    ``salt`` the keys and ``depth`` marks the wrapper's own leaves."""
    base = jax.random.fold_in(
        jax.random.fold_in(jax.random.key(seed), STATE_STREAM), salt)
    out = []
    for i, (x, fmt) in enumerate(zip(leaves, fmts, strict=True)):
      if fmt is None:
        out.append(x)
        continue
      key = jax.random.fold_in(base, i)
      if isinstance(fmt, formats.FloatingPoint) and width is not None:
        m = jnp.minimum(width(step), fmt.mantissa_bits)
        out.append(StoredLeaf(fmt.encode(x, key=key, mantissa_bits=m),
                              depth))
      else:
        out.append(StoredLeaf(fmt.encode(x, key=key), depth))
    return out

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _parameters_of(state: Any, params: Any) -> list:
  """Each state leaf's parameter: the one its key path ends with, of its
  shape (a moment of that parameter), or None."""
  by_path = {tuple(path): p for path, p in
             jax.tree_util.tree_flatten_with_path(params)[0]}
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(
      state, is_leaf=is_stored_leaf)[0]:
    path = tuple(path)
    found = next((by_path[path[cut:]] for cut in range(len(path) + 1)
                  if path[cut:] in by_path), None)
    same = found is not None and getattr(leaf, "shape", None) == getattr(
        found, "shape", ())
    out.append(found if same else None)
  return out


def _placed_like(x: Array, p: Array) -> Array:
  """``x`` (its values), made to depend on its parameter ``p``.

  The inner ``init`` builds its moments from shapes, so under ``jit`` on
  Auto mesh axes XLA places them, and their codes, on one device; through
  this dependence sharding propagation places them like ``p`` (as
  :meth:`quantmuon.formats.Format.init_like` does for stored momentum).
  It also keeps XLA from evaluating their encode at compile time: encoded
  from constants, the codes were constant-folded element by element
  (13-16 s of CPU to compile ``muon_lowbit``'s init with a 4096 x 256
  embedding). So a +0 computed from ``p`` is added rather than selected:
  XLA folds a select between two zero arrays, dependence and all.
  """
  return x + placement.zeros_like(p).astype(x.dtype)


def _decode(leaf: StoredLeaf) -> Array:
  return leaf.stored.decode(leaf.stored.dtype)


def _depth(inner_state: Any) -> int:
  """The depth of the wrapper holding ``inner_state``: 0, or one more than
  that of the deepest ``QuantizedState`` inside it."""
  nested = [x for x in jax.tree.leaves(
      inner_state, is_leaf=lambda x: isinstance(x, QuantizedState))
            if isinstance(x, QuantizedState)]
  return max((1 + _depth(q.inner) for q in nested), default=0)


def field_name(path: tuple, param_paths: frozenset) -> str | None:
  """The state field holding a leaf: the last attribute name on its path
  before the parameter path it ends with (the longest such), if any."""
  path = tuple(path)
  prefix = path
  for cut in range(len(path) + 1):
    if path[cut:] in param_paths:
      prefix = path[:cut]
      break
  names = [k.name for k in prefix if isinstance(k, jax.tree_util.GetAttrKey)]
  return names[-1] if names else None


def _field_names(state: Any) -> set[str]:
  """The field names of every NamedTuple in ``state``, leaves or not."""
  names = set()
  todo = [state]
  while todo:
    node = todo.pop()
    if is_stored_leaf(node):
      continue
    if isinstance(node, tuple) and hasattr(node, "_fields"):
      names.update(node._fields)
    children = jax.tree.leaves(node, is_leaf=lambda x, node=node: x
                               is not node)
    if not (len(children) == 1 and children[0] is node):
      todo.extend(children)
  return names


def _eligible(path: tuple, leaf: Any, min_size: int) -> bool:
  """A floating array of at least ``min_size`` elements and one dimension,
  not a hyperparameter of ``optax.inject_hyperparams`` (scalars such as b2
  or the learning rate must stay exact) and not another wrapper's leaf."""
  dtype = getattr(leaf, "dtype", None)
  hyper = any(isinstance(k, jax.tree_util.GetAttrKey)
              and k.name == "hyperparams" for k in path)
  return (not is_stored_leaf(leaf) and dtype is not None
          and jnp.issubdtype(dtype, jnp.floating) and leaf.ndim > 0
          and leaf.size >= min_size and not hyper)


def _check_format(fmt: Any, where: str) -> formats.Format | None:
  if fmt is not None and not isinstance(fmt, formats.Format):
    raise ValueError(
        f"state_format{where} must be a quantmuon.formats format or None, "
        f"got {fmt!r}.")
  return fmt


def _resolver(state_format: Any) -> Callable[[Any, Any, int], list]:
  """Checks ``state_format`` and returns ``(state, params, min_size) ->``
  one format or None per leaf of the state."""
  if isinstance(state_format, formats.Format):
    def pick(path, leaf, name):
      return state_format
    names = None
  elif isinstance(state_format, Mapping):
    for key, fmt in state_format.items():
      if not isinstance(key, str):
        raise ValueError(
            f"state_format's keys must be state field names (str), got "
            f"{key!r}.")
      _check_format(fmt, f"[{key!r}]")
    names = frozenset(state_format)

    def pick(path, leaf, name):
      return state_format.get(name)
  elif callable(state_format):
    def pick(path, leaf, name):
      return _check_format(state_format(path, leaf),
                           f"({jax.tree_util.keystr(path)}, leaf)")
    names = None
  else:
    raise ValueError(
        "state_format must be a format, a mapping from state field name to "
        f"format, or a callable (path, leaf) -> format; got {state_format!r}.")

  def resolve(state: Any, params: Any, min_size: int) -> list:
    param_paths = frozenset(
        tuple(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])
    leaves = jax.tree_util.tree_flatten_with_path(
        state, is_leaf=is_stored_leaf)[0]
    found = {field_name(path, param_paths) for path, _ in leaves}
    # A field may hold no leaf (AdamW's moments where every parameter is
    # another transform's in ``optax.partition``): still a field.
    found |= _field_names(state)
    if names is not None and names - found:
      raise ValueError(
          f"state_format names unknown state field(s) "
          f"{sorted(names - found)}; the inner state's fields are "
          f"{sorted(n for n in found if n is not None)}.")
    return [pick(path, leaf, field_name(path, param_paths))
            if _eligible(path, leaf, min_size) else None
            for path, leaf in leaves]

  return resolve
