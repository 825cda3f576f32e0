"""Where an optimizer's state bytes go: matrix (Muon) leaves and the rest.

The presets give Muon the hidden matrices and AdamW the embeddings, head,
norms and biases, so a state's bytes per parameter mix both. This splits
them, from shapes alone (``jax.eval_shape``): the matrix leaves' state is
what a Muon format stores; the rest is AdamW's two moments of the other
leaves (and a few step counters), the same for every Muon preset.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

import quantmuon


def split_params(params: dict[Any, Any], stack_axes: Any = None
                 ) -> tuple[dict, dict]:
  """The matrix leaves (labelled ``muon``) and the others, as two trees.

  Args:
    params: a nested dict of arrays or ``jax.ShapeDtypeStruct``s.
    stack_axes: the model's stacked layers (``quantmuon.muon_labels``).

  Returns:
    ``(matrix, other)``, nested dicts with the same paths, empty branches
    dropped.
  """
  labels = quantmuon.muon_labels(params, stack_axes=stack_axes)

  def keep(tree: Any, marks: Any, wanted: bool) -> Any:
    if not isinstance(tree, dict):
      return tree if (marks == "muon") == wanted else None
    out = {k: keep(v, marks[k], wanted) for k, v in tree.items()}
    return {k: v for k, v in out.items()
            if v is not None and not (isinstance(v, dict) and not v)}

  return keep(params, labels, True), keep(params, labels, False)


def _count(tree: Any) -> int:
  return sum(int(leaf.size) for leaf in jax.tree.leaves(tree))


def state_split(tx: optax.GradientTransformation, params: dict[Any, Any],
                stack_axes: Any = None) -> dict[str, int]:
  """Bytes of ``tx``'s state on the matrix leaves and on the others.

  Args:
    tx: the optimizer.
    params: its parameters (arrays or ``jax.ShapeDtypeStruct``s).
    stack_axes: as for :func:`split_params`.

  Returns:
    ``params``, ``state_bytes`` (the whole state), ``matrix_params`` and
    ``matrix_state_bytes`` (what the matrix leaves add to the state),
    ``other_params`` and ``other_state_bytes`` (the state of the others
    alone, step counters included).
  """
  matrix, other = split_params(params, stack_axes)
  total = quantmuon.nbytes(jax.eval_shape(tx.init, params))
  rest = quantmuon.nbytes(jax.eval_shape(tx.init, other))
  return {"params": _count(params), "state_bytes": total,
          "matrix_params": _count(matrix),
          "matrix_state_bytes": total - rest,
          "other_params": _count(other), "other_state_bytes": rest}
