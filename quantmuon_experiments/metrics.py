"""Metrics as JSON lines: one record per line, appended as training runs."""

from __future__ import annotations

import json
import os
from typing import Any


class MetricsLog:
  """A JSON-lines file of metric records (dicts with a ``step``).

  Args:
    path: the file; created on the first write.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)

  def read(self) -> list[dict[str, Any]]:
    """Every record in the file, in order (none when it does not exist)."""
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      return [json.loads(line) for line in f if line.strip()]

  def truncate(self, step: int) -> list[dict[str, Any]]:
    """Drops the records after ``step``, e.g. those a resume will redo.

    Args:
      step: the last step to keep.

    Returns:
      The records kept.
    """
    kept = [r for r in self.read() if r["step"] <= step]
    self.clear()
    for record in kept:
      self.write(record)
    return kept

  def clear(self) -> None:
    """Empties the file."""
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    open(self.path, "w").close()

  def write(self, record: dict[str, Any]) -> None:
    """Appends one record.

    Args:
      record: JSON-serializable values, including ``step``.
    """
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
