"""Statistics over seeds: paired ratios to fp32, c*(T), bootstrap CIs.

A width *matches* full precision when the geometric mean over seeds of its
metric is at most ``TOLERANCE`` times the fp32 run's (the same seeds, so
the ratio is paired). The needed width c*(T) is the smallest width from
which every wider width matches. Confidence intervals (95%) come from
``BOOTSTRAP`` resamples of the seeds, recomputing every quantity (c*,
slopes, differences) in each resample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

TOLERANCE = 1.25
BOOTSTRAP = 1000


class Table:
  """Log metrics per (problem, optimizer, rounding, T), bootstrapped.

  ``logs[key][setting]`` is the log metric per seed; ``gm(key, setting,
  idx)`` the mean over the seeds ``idx`` (one row per resample).
  """

  def __init__(self, records: Sequence[dict[str, Any]], resamples: int,
               seed: int = 0):
    self.logs: dict[tuple, dict[tuple[str, str], np.ndarray]] = {}
    self.bits: dict[tuple, dict[str, float]] = {}
    for r in records:
      key = (r["problem"], r["optimizer"], r["rounding"], r["steps"])
      self.logs.setdefault(key, {})[(r["component"], r["setting"])] = \
          np.log(np.maximum(np.asarray(r["metric"], np.float64), 1e-30))
      self.bits.setdefault(key, {})[r["setting"]] = r["mean_bits"]
    n = len(next(iter(next(iter(self.logs.values())).values())))
    rng = np.random.default_rng(seed)
    # Row 0 is the sample itself; the others resample the seeds.
    self.idx = np.concatenate([np.arange(n)[None],
                               rng.integers(0, n, (resamples, n))])

  def gm(self, key: tuple, comp: str, setting: str) -> np.ndarray:
    """log geometric mean of the metric, per resample."""
    return self.logs[key][(comp, setting)][self.idx].mean(axis=1)

  def ratio(self, key: tuple, comp: str, setting: str) -> np.ndarray:
    """log(metric / fp32 metric), per resample (paired by seed)."""
    return self.gm(key, comp, setting) - self.gm(key, "none", "fp32")

  def c_star(self, key: tuple, comp: str, bits: Sequence[int]
             ) -> np.ndarray:
    """The smallest width from which every wider one matches, per
    resample; ``bits[-1] + 2`` when the widest does not match."""
    ok = np.stack([self.ratio(key, comp, str(b)) <= math.log(TOLERANCE)
                   for b in bits], axis=1)  # [resamples, bits]
    tail = np.flip(np.cumprod(np.flip(ok, 1), 1), 1).astype(bool)
    first = np.where(tail.any(1), np.argmax(tail, 1), len(bits))
    values = np.asarray(list(bits) + [bits[-1] + 2])
    return values[first]


def ci(x: np.ndarray) -> dict[str, float]:
  """The sample value (row 0) and the 95% bootstrap interval."""
  x = np.asarray(x, np.float64)
  lo, hi = np.percentile(x[1:], [2.5, 97.5]) if len(x) > 1 else (x[0],) * 2
  return {"value": float(x[0]), "lo": float(lo), "hi": float(hi)}


def slope(ts: Sequence[int], ys: np.ndarray) -> np.ndarray:
  """Least-squares slope of ``ys`` [resamples, len(ts)] on log2 T."""
  x = np.log2(np.asarray(ts, np.float64))
  x = x - x.mean()
  return (ys - ys.mean(1, keepdims=True)) @ x / (x @ x)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Spearman correlation of ``x`` [n] with each row of ``y``."""
  def rank(a):
    return np.argsort(np.argsort(a, axis=-1), axis=-1).astype(np.float64)
  rx, ry = rank(x), rank(y)
  rx = rx - rx.mean()
  ry = ry - ry.mean(-1, keepdims=True)
  den = np.sqrt((rx @ rx) * np.sum(ry * ry, -1))
  return np.where(den > 0, ry @ rx / np.where(den > 0, den, 1.0), 0.0)
