"""quantmuon_experiments.tables: text and Markdown tables, the environment
record."""

from __future__ import annotations

import json

import numpy as np

from quantmuon_experiments import tables

ROWS = [{"a": "x", "b": 1.23456}, {"a": "long", "b": 2, "c": None}]


def test_text_aligns():
  lines = tables.text(ROWS, ["a", "b"]).splitlines()
  assert len(lines) == 4 and len({len(line) for line in lines}) == 1
  assert lines[0].split() == ["a", "b"]
  assert lines[2].startswith("x ") and lines[2].endswith(" 1.235")


def test_markdown_titles_digits_and_missing_cells():
  text = tables.markdown(ROWS, {"a": "name", "c": "C", "b": "value"},
                         digits=3)
  assert text.splitlines() == ["| name | C | value |", "|---|---|---|",
                               "| x |  | 1.23 |", "| long |  | 2 |"]


def test_markdown_defaults_to_the_first_rows_keys():
  text = tables.markdown([{"k": np.float32(0.5), "n": 3}])
  assert text.splitlines() == ["| k | n |", "|---|---|", "| 0.5 | 3 |"]


def test_environment_is_json_and_described_in_one_line():
  env = json.loads(json.dumps(tables.environment()))
  assert env["backend"] == "cpu" and env["device_count"] >= 1
  line = tables.describe(env)
  assert line.endswith(f"(cpu), {env['cpu_count']} CPU cores, "
                       f"jax {env['jax']}")
  assert "\n" not in line


def test_describe_reads_records_older_than_cpu_count():
  old = {"date": "2026-01-01T00:00:00+00:00", "cpu": "Some CPU",
         "backend": "cpu", "devices": ["cpu"], "jax": "0.6.0"}
  assert tables.describe(old) == "Some CPU (cpu), jax 0.6.0"
  gpu = dict(old, backend="gpu", devices=["H100", "H100"], cpu_count=8)
  assert tables.describe(gpu) == "2 x H100 (gpu), 8 CPU cores, jax 0.6.0"
