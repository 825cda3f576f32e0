"""Newton-Schulz orthogonalization, the core of Muon.

Keller Jordan's Muon: ``X = U / (||U||_F + eps)``, transposed when it has
more rows than columns, then ``X <- a X + (b A + c A^2) X`` with ``A = X X^T``
for each step's coefficients (a, b, c). Leaves of rank > 2 are reshaped by
``MuonDimensionNumbers`` into a batch of matrices. Unlike
``optax.contrib.muon``, a plain matrix is not run under ``vmap`` over a batch
of one (which costs about a third of the time and most of the temporary
memory), and leaves are processed one after another so their
temporaries do not pile up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from quantmuon.formats.base import check_choice
from quantmuon.formats.matrix_view import MatrixView
from quantmuon.transforms import matrices, options, stacked
from quantmuon.transforms import schedule as schedule_lib

Array = jax.Array

QUINTIC = (3.4445, -4.7750, 2.0315)
# Amsel et al., "The Polar Express" (arXiv 2505.16932), five steps; the input
# is normalized by 1.02 * ||U||_F.
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
POLAR_EXPRESS_SAFETY = 1.02
# Steps after the fifth: Newton-Schulz's quintic, whose fixed point is 1 (the
# fifth triple's is about 1.035), as the Polar Express reference code does.
POLAR_EXPRESS_TAIL = (1.875, -1.25, 0.375)


# optax.contrib.muon's "dion" preset (Ahn et al., arXiv 2504.05295).
DION = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
# The first-step rescalings' floor, as optax's (a fixed 1e-8).
PRECONDITIONING_EPS = 1e-8


class NewtonSchulz(NamedTuple):
  """A resolved iteration: one (a, b, c) per step, the input margin and
  the preconditioning."""
  coeffs: tuple[tuple[float, float, float], ...]
  safety: float
  preconditioning: str = "frobenius"


def newton_schulz_schedule(ns_coeffs: Any = "quintic",
                           ns_steps: int | None = None,
                           preconditioning: str = "frobenius"
                           ) -> NewtonSchulz:
  """Resolves ``ns_coeffs`` and ``ns_steps`` to per-step coefficients.

  Args:
    ns_coeffs: ``"quintic"`` (or optax's name ``"standard"``: Keller
      Jordan's triple every step), ``"polar_express"`` (five tuned
      triples, then ``POLAR_EXPRESS_TAIL`` for any further steps),
      ``"dion"`` (optax's five triples), one ``(a, b, c)`` triple, or a
      sequence of triples (one per step; its length sets the number of
      steps).
    ns_steps: number of steps for a single triple or a preset (None: 5);
      a sequence of triples must not be longer (as in optax).
    preconditioning: one of ``PRECONDITIONINGS`` (see
      :class:`quantmuon.transforms.options.OrthogonalizeOptions`).

  Returns:
    A ``NewtonSchulz`` with one triple per step.
  """
  steps = options.static_int(ns_steps, "ns_steps", 5)
  if steps < 1:
    raise ValueError(f"ns_steps must be >= 1, got {steps}.")
  check_choice(preconditioning, "preconditioning", options.PRECONDITIONINGS)
  safety = 1.0
  if isinstance(ns_coeffs, str):
    if ns_coeffs in ("quintic", "standard"):
      triples = [QUINTIC] * steps
    elif ns_coeffs == "polar_express":
      triples = list(POLAR_EXPRESS[:steps])
      triples += [POLAR_EXPRESS_TAIL] * (steps - len(triples))
      safety = POLAR_EXPRESS_SAFETY
    elif ns_coeffs == "dion":
      triples = _sequence(DION, steps)
    else:
      raise ValueError(
          "ns_coeffs must be 'quintic' ('standard'), 'polar_express', "
          "'dion', an (a, b, c) triple or a sequence of triples, got "
          f"{ns_coeffs!r}.")
  else:
    arr = np.asarray(ns_coeffs, dtype=np.float64)
    if arr.shape == (3,):
      triples = [tuple(arr)] * steps
    elif arr.ndim == 2 and arr.shape[1] == 3 and arr.shape[0] >= 1:
      triples = _sequence([tuple(row) for row in arr], steps)
    else:
      raise ValueError(
          "ns_coeffs must be an (a, b, c) triple or a sequence of triples, "
          f"got an array of shape {arr.shape}.")
  return NewtonSchulz(tuple(tuple(float(c) for c in t) for t in triples),
                      safety, preconditioning)


def _sequence(triples: Sequence[tuple], steps: int) -> list[tuple]:
  """A sequence of triples, each one step; more than ``steps`` is an
  error, as in optax."""
  if len(triples) > steps:
    raise ValueError(
        f"ns_coeffs has {len(triples)} triples, more than ns_steps={steps}; "
        "pass ns_steps >= the number of triples.")
  return list(triples)


def _step(x: Array, gram: Array, coeffs: tuple[float, float, float]
          ) -> Array:
  a, b, c = coeffs
  return a * x + (b * gram + c * gram @ gram) @ x


def _gram(x: Array) -> Array:
  return x @ jnp.swapaxes(x, -1, -2)


def newton_schulz(x: Array, schedule: NewtonSchulz, eps: float = 1e-7
                  ) -> Array:
  """Orthogonalizes one matrix (or a batch, over leading axes).

  Args:
    x: array of shape (..., m, n).
    schedule: from :func:`newton_schulz_schedule`.
    eps: added to the norm before dividing (``frobenius`` and
      ``spectral`` preconditioning).

  Returns:
    float32 array of ``x``'s shape, approximately ``U V^T`` of its SVD.
  """
  x = x.astype(jnp.float32)
  transposed = x.shape[-2] > x.shape[-1]
  if transposed:
    x = jnp.swapaxes(x, -1, -2)
  coeffs = schedule.coeffs
  kind = schedule.preconditioning
  if kind in ("frobenius", "spectral"):
    if kind == "frobenius":
      norm = jnp.sqrt(jnp.sum(x * x, axis=(-2, -1), keepdims=True))
    else:
      norm = jnp.linalg.norm(x, ord=2, axis=(-2, -1), keepdims=True)
    x = x / (norm * schedule.safety + eps)
  else:
    gram = _gram(x)
    floor = PRECONDITIONING_EPS
    if kind == "aol":
      s = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(gram), axis=-1),
                                    floor))[..., None]
      x, gram = x * s, gram * s * jnp.swapaxes(s, -1, -2)
    else:  # schatten
      s = jax.lax.rsqrt(jnp.maximum(
          jnp.sqrt(jnp.sum(gram * gram, axis=(-2, -1), keepdims=True)),
          floor))
      x, gram = x * s, gram * s * s
    x = _step(x, gram, coeffs[0])
    coeffs = coeffs[1:]
  for triple in coeffs:
    x = _step(x, _gram(x), triple)
  return jnp.swapaxes(x, -1, -2) if transposed else x


def orthogonalize_matrices(u: Array, schedule: NewtonSchulz, eps: float,
                           view: MatrixView) -> Array:
  """Newton-Schulz of each matrix of a leaf, in the leaf's shape and dtype.

  The matrices of a batch run one after another
  (:func:`quantmuon.transforms.schedule.over_matrices`), as in
  :func:`quantmuon.transforms.leafwise_muon`, which gives the same results.

  Args:
    u: the leaf.
    schedule: from :func:`newton_schulz_schedule`.
    eps: added to each matrix's norm.
    view: the leaf's view.

  Returns:
    The orthogonalized leaf.
  """
  if view.is_matrix:
    return newton_schulz(u, schedule, eps).astype(u.dtype)
  out, _ = schedule_lib.over_matrices(
      lambda b, x, c: (newton_schulz(x, schedule, eps).astype(u.dtype), c),
      view.to_matrices(u), ())
  return view.from_matrices(out, u.shape)


def dual_norm(momentum: Array, update: Array) -> Array:
  """``<momentum, update>`` summed over the leaf: ``adaptive``'s factor."""
  return jnp.sum(momentum.astype(jnp.float32) * update.astype(jnp.float32))


def orthogonalize_stacked(leaves: Sequence[Array],
                          views: Sequence[MatrixView],
                          schedule: NewtonSchulz, eps: float,
                          mesh: Any) -> list[Array]:
  """Newton-Schulz of every leaf in the stacked layout on ``mesh``.

  Args:
    leaves: the updates' leaves.
    views: their views; a leaf's batch of matrices joins the stack as it
      is.
    schedule: from :func:`newton_schulz_schedule`.
    eps: added to each matrix's norm.
    mesh: from :func:`quantmuon.transforms.stacked.resolve_mesh`.

  Returns:
    The orthogonalized leaves, in their shapes and dtypes.
  """
  def run(leaves):
    mats = [u if v.is_matrix else v.to_matrices(u)
            for u, v in zip(leaves, views, strict=True)]
    outs = stacked.map_stacked(
        lambda x: newton_schulz(x, schedule, eps), mats, mesh)
    return [(x if v.is_matrix else v.from_matrices(x, u.shape)
             ).astype(u.dtype)
            for x, u, v in zip(outs, leaves, views, strict=True)]

  return stacked.on_auto_axes(run, leaves, mesh)


@options.expand
def orthogonalize(ns: options.OrthogonalizeOptions,
                  view: options.ViewOptions) -> optax.GradientTransformation:
  """Replaces each update by its Newton-Schulz orthogonalization.

  Follows Keller Jordan's Muon (quintic iteration), the Polar Express
  (Amsel et al. 2025) or optax's presets, with optax's preconditionings.
  Each matrix of a leaf's view is orthogonalized on its own. Stateless;
  ``params`` are not used. On a mesh the default lays the matrices out
  whole on devices (see :mod:`quantmuon.transforms.stacked`).

  Args:
    ns: the fields of ``OrthogonalizeOptions``, as keywords (see
      :mod:`quantmuon.transforms.options`).
    view: the field of ``ViewOptions``, ``dimension_numbers``: leaves of
      rank > 2 need them; rank 0 and 1 leaves are an error.

  Returns:
    An ``optax.GradientTransformation`` with empty state.
  """
  ns = ns.checked("orthogonalize")
  schedule = newton_schulz_schedule(ns.ns_coeffs, ns.ns_steps,
                                    ns.preconditioning)

  def update_fn(updates, state, params=None):
    del params
    leaves, treedef = jax.tree.flatten(updates)
    views = matrices.leaf_views(view.dimension_numbers, updates)
    on = stacked.resolve_mesh(ns.ns_layout, ns.mesh, leaves)
    if on is not None:
      outs = orthogonalize_stacked(leaves, views, schedule, ns.eps, on)
    else:
      outs = [orthogonalize_matrices(u, schedule, ns.eps, v)
              for u, v in zip(leaves, views, strict=True)]
    if ns.adaptive:
      outs = [(o * dual_norm(u, o)).astype(o.dtype)
              for u, o in zip(leaves, outs, strict=True)]
    return treedef.unflatten(outs), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)
