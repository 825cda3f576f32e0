"""Tables and the environment record of every printed or recorded result.

:func:`text` aligns rows for a terminal (``quantmuon-demo``, the
benchmarks); :func:`markdown` writes them for ``results.md``, the README
and the notebooks. :func:`environment` records where a result was measured,
and :func:`describe` says it in one line. This module imports nothing from
quantmuon, so every layer, the benchmarks and the notebooks can use it.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

Columns = Sequence[str] | Mapping[str, str]


def cell(value: Any, digits: int = 4) -> str:
  """One table cell: floats to ``digits`` significant digits, None empty.

  Args:
    value: the value.
    digits: significant digits of a float (numpy floats included).

  Returns:
    The cell's text.
  """
  if isinstance(value, float | np.floating):
    return f"{value:.{digits}g}"
  return "" if value is None else str(value)


def _titles(rows: Sequence[Mapping[str, Any]], columns: Columns | None
            ) -> dict[str, str]:
  """Key -> title: a mapping as given, a sequence as its own titles."""
  if columns is None:
    columns = list(rows[0]) if rows else []
  if isinstance(columns, Mapping):
    return dict(columns)
  return {c: c for c in columns}


def text(rows: Sequence[Mapping[str, Any]], columns: Columns | None = None,
         digits: int = 4) -> str:
  """Rows of dicts as an aligned text table.

  Args:
    rows: the rows; a missing key prints empty.
    columns: the keys to show, in order (a mapping: key -> title); the
      first row's keys when None.
    digits: significant digits of floats.

  Returns:
    The table: a header line, a rule, one line a row; the first column is
    left-aligned, the others right-aligned.
  """
  titles = _titles(rows, columns)
  cells = [[cell(row.get(k), digits) for k in titles] for row in rows]
  widths = [max([len(t)] + [len(r[i]) for r in cells])
            for i, t in enumerate(titles.values())]

  def line(values: Sequence[str]) -> str:
    return "  ".join(v.rjust(w) if i else v.ljust(w)
                     for i, (v, w) in enumerate(zip(values, widths,
                                                    strict=True)))

  out = [line(list(titles.values())), line(["-" * w for w in widths])]
  out += [line(r) for r in cells]
  return "\n".join(out)


def markdown(rows: Sequence[Mapping[str, Any]],
             columns: Columns | None = None, digits: int = 4) -> str:
  """Rows of dicts as a Markdown table.

  Args:
    rows: the rows; a missing key prints empty.
    columns: the keys to show, in order (a mapping: key -> title); the
      first row's keys when None.
    digits: significant digits of floats.

  Returns:
    The table: a header row, a ``|---|`` rule, one row a dict.
  """
  titles = _titles(rows, columns)
  lines = ["| " + " | ".join(titles.values()) + " |",
           "|" + "---|" * len(titles)]
  lines += ["| " + " | ".join(cell(row.get(k), digits) for k in titles)
            + " |" for row in rows]
  return "\n".join(lines)


def environment() -> dict[str, Any]:
  """Where and when a result was measured.

  Returns:
    The UTC ``date`` and time, the ``machine`` (architecture),
    ``processor``, ``cpu`` model and ``cpu_count``, the ``platform``, the
    ``python``, ``jax`` and ``jaxlib`` versions, the default ``backend``,
    its ``devices`` and ``device_count``.
  """
  devices = jax.devices()
  return {
      "date": datetime.datetime.now(datetime.UTC).isoformat(
          timespec="seconds"),
      "machine": platform.machine(),
      "processor": platform.processor() or platform.machine(),
      "cpu": _cpu_model(),
      "cpu_count": os.cpu_count(),
      "platform": platform.platform(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": getattr(jax.lib, "__version__", None),
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


def describe(env: Mapping[str, Any]) -> str:
  """An :func:`environment` record in one line, without its date.

  Records written before a field existed still read: a missing CPU count
  is left out.

  Args:
    env: the record.

  Returns:
    The device (the CPU's model on the CPU backend, else the first
    accelerator's kind) and backend, the CPU cores, the jax version.
  """
  backend = env.get("backend", "cpu")
  devices = env.get("devices") or []
  device = env.get("cpu") or env.get("processor")
  if backend != "cpu" and devices:
    device = f"{len(devices)} x {devices[0]}"
  cores = (f", {env['cpu_count']} CPU cores" if env.get("cpu_count")
           else "")
  return f"{device} ({backend}){cores}, jax {env['jax']}"
