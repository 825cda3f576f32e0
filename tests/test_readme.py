"""The README's Python snippets run as written, in order."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippets_run():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
  assert len(blocks) >= 2
  namespace: dict = {}
  for block in blocks:
    exec(compile(block, str(README), "exec"), namespace)
  assert namespace["loss"] > 0
  labels = namespace["qm"].muon_labels(namespace["params"])
  assert labels["hidden"]["kernel"] == "muon"
  assert labels["embed"]["embedding"] == "adam"
  assert labels["head"]["kernel"] == "adam"
  assert labels["hidden"]["bias"] == "adam"
