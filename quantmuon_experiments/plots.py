"""The comparison's plots: loss curves and memory, lines told apart.

Close lines stay visible: every optimizer has its own color, line style
and marker (the reference is black and dashed), a panel zooms on the last
third of training, and legends sit outside the axes.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


def _pyplot() -> Any:
  """``matplotlib.pyplot`` on the file-only Agg backend, imported lazily."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def styles(names: list[str], reference: str) -> dict[str, dict[str, Any]]:
  """A distinct color, line style and marker per optimizer.

  Args:
    names: the optimizers, in order.
    reference: drawn black, dashed and thicker.

  Returns:
    name -> keyword arguments of ``Axes.plot``.
  """
  colors = _pyplot().get_cmap("tab10").colors
  out = {}
  others = itertools.count()
  for name in names:
    if name == reference:
      out[name] = dict(color="black", linestyle="--", marker="o",
                       linewidth=2.2, zorder=5)
      continue
    i = next(others)
    out[name] = dict(color=colors[i % len(colors)],
                     linestyle=LINESTYLES[i % len(LINESTYLES)],
                     marker=MARKERS[i % len(MARKERS)], linewidth=1.4)
  return out


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
  if window <= 1 or len(values) < window:
    return values
  return np.convolve(values, np.ones(window) / window, mode="valid")


def _zoom_limits(curves: list[np.ndarray], start: float
                 ) -> tuple[float, float] | None:
  tail = np.concatenate([c[c[:, 0] >= start, 1] for c in curves if len(c)])
  tail = tail[np.isfinite(tail)]
  if not len(tail):
    return None
  lo, hi = float(tail.min()), float(tail.max())
  pad = 0.08 * (hi - lo) or 0.01 * abs(hi) or 0.01
  return lo - pad, hi + pad


def plot_losses(results: dict[str, Any], path: str) -> None:
  """Validation loss, its last third zoomed, and smoothed training loss.

  Args:
    results: what ``compare.compare`` returns.
    path: the PNG to write.
  """
  plt = _pyplot()
  opts = results["optimizers"]
  style = styles(list(opts), results["reference"])
  fig, (ax_val, ax_zoom, ax_train) = plt.subplots(
      1, 3, figsize=(16, 4.8), layout="constrained")
  vals, trains = {}, {}
  for name, r in opts.items():
    vals[name] = np.array(r["val_curve"]).reshape(-1, 2)
    train = np.array(r["train_curve"]).reshape(-1, 2)
    window = max(1, len(train) // 25)
    trains[name] = np.stack([train[window - 1:, 0],
                             _smooth(train[:, 1], window)], axis=1) if len(
                                 train) else train
  last = max((c[-1, 0] for c in vals.values() if len(c)), default=0)
  start = 2 * last / 3
  for name in opts:
    val, train = vals[name], trains[name]
    ax_val.plot(val[:, 0], val[:, 1], ms=4, label=name, **style[name])
    tail = val[val[:, 0] >= start]
    ax_zoom.plot(tail[:, 0], tail[:, 1], ms=6, **style[name])
    every = max(1, len(train) // 8)
    ax_train.plot(train[:, 0], train[:, 1], ms=4, markevery=every,
                  **style[name])
  for ax, curves, since in ((ax_zoom, vals, start),
                            (ax_val, vals, last / 3),
                            (ax_train, trains, last / 3)):
    limits = _zoom_limits(list(curves.values()), since)
    if limits:  # the early, high losses would flatten the rest
      ax.set_ylim(*limits)
  ax_val.set(title="validation loss", xlabel="step", ylabel="loss")
  ax_zoom.set(title=f"validation loss, last third (step >= {start:.0f})",
              xlabel="step")
  ax_train.set(title="training loss (moving average)", xlabel="step")
  for ax in (ax_val, ax_zoom, ax_train):
    ax.grid(alpha=0.3)
  fig.legend(loc="outside right center")
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_memory(results: dict[str, Any], path: str) -> None:
  """Optimizer state (matrix leaves and the rest), and the compiled step.

  Args:
    results: what ``compare.compare`` returns.
    path: the PNG to write.
  """
  plt = _pyplot()
  opts = results["optimizers"]
  names = list(opts)
  x = np.arange(len(names))
  fig, (ax_s, ax_c) = plt.subplots(1, 2, figsize=(13, 5),
                                   layout="constrained")
  matrix = np.array([opts[n]["matrix_state_bytes"] for n in names]) / 2**20
  rest = np.array([opts[n]["other_state_bytes"] for n in names]) / 2**20
  ax_s.bar(x, matrix, color="tab:blue", label="matrix leaves (Muon)")
  bars = ax_s.bar(x, rest, bottom=matrix, color="tab:gray",
                  label="the rest (AdamW: embeddings, head, norms)")
  ax_s.bar_label(bars, labels=[f"{t:.2f}" for t in matrix + rest],
                 fontsize=8)
  ax_s.set_title("optimizer state (MiB, quantmuon.nbytes)")
  bottom = np.zeros(len(names))
  for part in ("arguments", "outputs", "temporaries"):
    values = np.array([opts[n]["compiled_step_memory"][part]
                       for n in names]) / 2**20
    ax_c.bar(x, values, bottom=bottom, label=part)
    bottom += values
  for i, total in enumerate(bottom):
    ax_c.annotate(f"{total:.1f}", (i, total), ha="center", va="bottom",
                  fontsize=8)
  ax_c.set_title("compiled train step (MiB)")
  for ax in (ax_s, ax_c):
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.12)  # room for the labels above the bars
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3),
              ncol=3, frameon=False)
  fig.savefig(path, dpi=110)
  plt.close(fig)
