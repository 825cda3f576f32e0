"""Helpers shared by the benchmarks: print a table, record it as JSON.

Each benchmark calls :func:`report` with its rows; the rows land in
``benchmarks/results/<name>.json`` together with the date, the machine and
the JAX version, so a recorded number always says where it came from.
Run benchmarks from the repository root as modules, e.g.
``python -m benchmarks.formats``.
"""

from __future__ import annotations

import datetime
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from quantmuon.demo import format_table

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
  """Where and when a benchmark ran.

  Returns:
    The UTC date and time, the processor and platform, Python, jax and
    jaxlib versions, the default backend and its devices.
  """
  devices = jax.devices()
  return {
      "date": datetime.datetime.now(datetime.UTC).isoformat(
          timespec="seconds"),
      "processor": platform.processor() or platform.machine(),
      "cpu": _cpu_model(),
      "platform": platform.platform(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__")
      else None,
      "backend": jax.default_backend(),
      "devices": [getattr(d, "device_kind", str(d)) for d in devices],
      "device_count": len(devices),
  }


def _cpu_model() -> str | None:
  """The CPU's model name from /proc/cpuinfo (Linux), else None."""
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return None


def _plain(value: Any) -> Any:
  """JSON fallback for numpy scalars and arrays, and anything else."""
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
  print(format_table(rows, columns))


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
  path.write_text(json.dumps(payload, indent=2, default=_plain) + "\n")
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
  path = write_json(name, {"benchmark": name, "environment": environment(),
                           "settings": meta or {}, "rows": list(rows)})
  print(f"wrote {path}")
  return path
