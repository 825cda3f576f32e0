"""Helpers shared by the benchmarks: print a table, record it as JSON.

Each benchmark calls :func:`report` with its rows; the rows land in
``benchmarks/results/<name>.json`` together with the environment record of
``quantmuon_experiments.tables`` (the date, the machine and the JAX
version), so a recorded number always says where it came from.
Run benchmarks from the repository root as modules, e.g.
``python -m benchmarks.formats``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from quantmuon_experiments import tables

RESULTS = Path(__file__).resolve().parent / "results"


def plain(value: Any) -> Any:
  """JSON fallback for numpy scalars and arrays, and anything else
  (``json.dumps(..., default=plain)``)."""
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str],
                title: str | None = None) -> None:
  """Prints ``rows`` as an aligned table of ``columns``.

  Args:
    rows: one dict a row.
    columns: the keys to show, in order.
    title: a line printed above the table.
  """
  if title:
    print(title)
  print(tables.text(rows, columns))


def write_json(name: str, payload: dict[str, Any]) -> Path:
  """Writes ``payload`` to ``benchmarks/results/<name>.json``.

  Args:
    name: the benchmark's name (the file's stem).
    payload: anything JSON can hold; numpy values are converted.

  Returns:
    The path written.
  """
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"{name}.json"
  path.write_text(json.dumps(payload, indent=2, default=plain) + "\n")
  return path


def report(name: str, rows: Sequence[dict[str, Any]],
           columns: Sequence[str], meta: dict[str, Any] | None = None
           ) -> Path:
  """Prints the rows as a table and records them with the environment.

  Args:
    name: the benchmark's name; the JSON goes to ``results/<name>.json``.
    rows: one dict a row; every key is recorded, ``columns`` are printed.
    columns: the keys to print, in order.
    meta: the benchmark's settings (sizes, steps, ...), recorded as is.

  Returns:
    The path of the JSON file.
  """
  print_table(rows, columns, title=f"== {name} ==")
  path = write_json(name, {"benchmark": name,
                           "environment": tables.environment(),
                           "settings": meta or {}, "rows": list(rows)})
  print(f"wrote {path}")
  return path


def fastest_step(step: Callable[..., tuple[Any, Any]], grads: Any,
                 state: Any, params: Any, repeats: int
                 ) -> tuple[float, Any]:
  """Runs a compiled ``(grads, state, params) -> (updates, state)`` step
  once to warm up, then ``repeats`` times, feeding the state on.

  Returns:
    ``(the fastest repeat in seconds, the last state)``: the fastest
    repeat is the least disturbed by other work on the machine.
  """
  _, state = jax.block_until_ready(step(grads, state, params))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    _, state = jax.block_until_ready(step(grads, state, params))
    times.append(time.perf_counter() - start)
  return float(np.min(times)), state
