"""docs/results.md is what ``benchmarks/readme_tables.py`` makes of the
recorded results."""

from __future__ import annotations

import re

from benchmarks import readme_tables


def test_results_page_is_current():
  assert readme_tables.main(["--check"]) == 0, (
      "docs/results.md is stale: run python -m benchmarks.readme_tables")


def test_check_fails_on_a_stale_page_and_passes_once_written(
    tmp_path, monkeypatch):
  page = tmp_path / "results.md"
  monkeypatch.setattr(readme_tables, "PAGE", page)
  assert readme_tables.main(["--check"]) == 1  # missing
  page.write_text(readme_tables.page() + "edited by hand\n")
  assert readme_tables.main(["--check"]) == 1
  assert readme_tables.main([]) == 0
  assert readme_tables.main(["--check"]) == 0


def test_every_section_states_its_date_and_machine():
  for heading, text in readme_tables.sections():
    assert text, f"no record for {heading!r}"
    assert re.search(r"20\d\d-\d\d-\d\d", text), heading
    assert "(cpu)" in text, heading  # tables.describe: "<machine> (cpu)"
