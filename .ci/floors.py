"""Prints the lowest versions pyproject.toml states, pinned, one a line.

Each ``name>=X`` of the dependencies and of the ``experiments`` extra
becomes ``name==X``; requirements without a lower bound are left out (pip
installs their newest release). ``.ci/run`` installs these pins beside the
package in a fresh virtual environment and runs ``tests/smoke_floors.py``.

  python .ci/floors.py [pyproject.toml]
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def floors(pyproject: Path) -> list[str]:
  """``name==X`` for every ``name>=X`` requirement, in file order.

  Args:
    pyproject: the pyproject.toml to read.

  Returns:
    The pins.
  """
  project = tomllib.loads(pyproject.read_text())["project"]
  requirements = [*project["dependencies"],
                  *project["optional-dependencies"]["experiments"]]
  pins = []
  for requirement in requirements:
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][^,;\s]*)",
                         requirement.strip())
    if match:
      pins.append(f"{match.group(1)}=={match.group(2)}")
  return pins


if __name__ == "__main__":
  root = Path(__file__).resolve().parents[1]
  path = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "pyproject.toml"
  print("\n".join(floors(path)))
