"""The README and the pages under docs/: every Python block runs on its
own, every relative link resolves, and the README stays short.

Each ```python block runs in a fresh namespace, so each must be complete
(imports included); a block that is not meant to run uses another fence
(```text, ```bash).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 12_000  # bytes
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _blocks() -> list[tuple[str, int, str]]:
  """``(page, line, source)`` of every ```python block."""
  out = []
  for page in PAGES:
    text = page.read_text()
    for match in FENCE.finditer(text):
      if match.group(1) == "python":
        line = text.count("\n", 0, match.start(2)) + 1
        out.append((str(page.relative_to(ROOT)), line, match.group(2)))
  return out


BLOCKS = _blocks()


@pytest.mark.parametrize(("page", "line", "source"), BLOCKS,
                         ids=[f"{p}:{n}" for p, n, _ in BLOCKS])
def test_python_block_runs_on_its_own(page, line, source):
  # Blank lines keep the traceback's line numbers those of the page.
  code = compile("\n" * (line - 1) + source, str(ROOT / page), "exec")
  exec(code, {"__name__": "__docs__"})


def test_every_page_has_python_blocks_or_is_meant_not_to():
  pages = {p for p, _, _ in BLOCKS}
  without = {"docs/architecture.md", "docs/results.md",
             "docs/accelerator.md"}
  for page in PAGES:
    name = str(page.relative_to(ROOT))
    assert (name in pages) != (name in without), name


def test_the_readme_is_short_and_links_every_page():
  assert len(README.read_bytes()) <= README_LIMIT
  text = README.read_text()
  for page in sorted((ROOT / "docs").glob("*.md")):
    assert f"(docs/{page.name}" in text, f"README does not link {page.name}"


def _slug(heading: str) -> str:
  """GitHub's anchor of a Markdown heading."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
  text = FENCE.sub("", page.read_text())
  return {_slug(m.group(1))
          for m in re.finditer(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
  text = FENCE.sub("", page.read_text())
  for target in LINK.findall(text):
    if re.match(r"[a-z]+://", target):
      continue
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.name}: {target} does not exist"
    if anchor and resolved.suffix == ".md":
      assert anchor in _anchors(resolved), (
          f"{page.name}: no heading #{anchor} in {resolved.name}")


def test_slug_follows_github():
  assert _slug("Optimizer state at GPT-2 small's size") == (
      "optimizer-state-at-gpt-2-smalls-size")
  assert _slug("Flax NNX: `nnx.vmap` and `nnx.scan`") == (
      "flax-nnx-nnxvmap-and-nnxscan")
