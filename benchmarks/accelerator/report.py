"""``accelerator.md``: the record as Markdown tables for the results page.

One heading a section (its status, where and when it ran, then its table
through ``quantmuon_experiments.tables.markdown``), after the targets and
decisions of ``decide.evaluate``.
"""

from __future__ import annotations

from typing import Any

from benchmarks.accelerator.record import SECTIONS
from quantmuon_experiments import tables

# The columns each section's table shows (key -> title).
COLUMNS: dict[str, dict[str, str]] = {
    "kernels": {"preset": "preset", "shape": "shape", "family": "family",
                "kernel_calls": "kernel calls", "codes_differ": "codes differ",
                "codes_total": "codes", "other_differ": "scales differ",
                "fresh_max_rel_diff": "update max rel diff",
                "error": "error"},
    "bandwidth": {"format": "format", "shape": "shape", "bytes": "bytes",
                  "xla_ms": "XLA ms", "xla_GBps": "XLA GB/s",
                  "fused_ms": "fused ms", "fused_GBps": "fused GB/s",
                  "fused_pct_peak": "fused % peak",
                  "fused_over_xla": "fused / XLA", "fused_error": "error"},
    "step": {"scale": "scale", "variant": "optimizer", "total_mib": "MiB",
             "memory_vs_optax": "memory / optax", "step_ms": "ms",
             "time_vs_optax": "time / optax",
             "time_vs_default_pipeline": "time / leafwise",
             "time_vs_xla": "time / xla", "conditionals": "conds",
             "compile_s": "compile s", "error": "error"},
    "quality": {"optimizer": "optimizer", "final_val_loss": "val loss",
                "cpu_final_val_loss": "CPU val loss", "diff": "diff",
                "seed_std": "seed std", "same_corpus": "same corpus",
                "quantization_cost_pct": "cost vs twin %",
                "cpu_quantization_cost_pct": "CPU cost %",
                "time_ratio": "step time / reference"},
    "memory_at_scale": {"optimizer": "optimizer", "batch": "batch",
                        "peak_GiB": "peak GiB", "peak_vs_muon": "peak / muon",
                        "compiled_GiB": "compiled GiB",
                        "state_MiB": "state MiB", "step_ms": "step ms"},
    "profile": {"scale": "scale", "variant": "optimizer",
                "conditionals": "conds", "d2h_per_step": "D2H copies / step",
                "syncs_per_step": "syncs / step",
                "traced_step_ms": "traced ms", "error": "error"},
}


def _cell(value: Any) -> Any:
  """A ratio's spread as ``median [min, max]``; other values as they are."""
  if isinstance(value, dict) and "median" in value:
    return (f"{tables.cell(value['median'], 3)} "
            f"[{tables.cell(value['min'], 3)}, {tables.cell(value['max'], 3)}]")
  if isinstance(value, dict):
    return ", ".join(f"{k} {v}" for k, v in value.items())
  if isinstance(value, str) and len(value) > 80:
    return value[:77] + "..."
  return value


def _where(entry: dict[str, Any]) -> str:
  env = entry.get("environment")
  if not env:
    return "where: unknown"
  return f"{(env.get('date') or '')[:10]}, {tables.describe(env)}"


def section(name: str, entry: dict[str, Any]) -> list[str]:
  """A section's heading, status line and table."""
  lines = [f"## {name}", "",
           f"{entry.get('status')} in {entry.get('wall_s', 0):.0f} s; "
           f"{_where(entry)}."]
  if entry.get("error"):
    lines.append(f"Error: `{entry['error'][:300]}`")
  if entry.get("reason"):
    lines.append(f"Skipped: {entry['reason']}.")
  if entry.get("skipped"):
    lines.append(f"Left out for time: {', '.join(map(str, entry['skipped']))}.")
  rows = [{k: _cell(v) for k, v in row.items()}
          for row in entry.get("rows") or []]
  if rows:
    present = {k: t for k, t in COLUMNS[name].items()
               if any(r.get(k) is not None for r in rows)}
    lines += ["", tables.markdown(rows, present)]
  return lines + [""]


def markdown(record: dict[str, Any]) -> str:
  """The whole record as Markdown.

  Args:
    record: an ``accelerator.json`` record.

  Returns:
    The text of ``accelerator.md``.
  """
  lines = [f"# Accelerator check ({record.get('mode')})", "",
           f"Device: {record.get('device') or 'unknown'}.", ""]
  evaluation = record.get("evaluation") or {}
  targets = evaluation.get("targets") or []
  if targets:
    lines += ["## Targets", "", tables.markdown(
        [{k: _cell(v) for k, v in t.items()} for t in targets],
        {"section": "section", "target": "target", "measured": "measured",
         "met": "met", "note": "note"}), ""]
  decisions = evaluation.get("decisions") or {}
  if decisions:
    pipeline = decisions.get("pipeline") or {}
    lines += ["## Decisions", "",
              f"- pipeline: {pipeline.get('choice')} ({pipeline.get('why')})",
              f"- impl: {(decisions.get('impl') or {}).get('choice')}"]
    if decisions.get("note"):
      lines.append(f"- {decisions['note']}")
    if decisions.get("round_trips"):
      lines += ["", tables.markdown(
          [{k: _cell(v) for k, v in r.items()}
           for r in decisions["round_trips"]])]
    lines.append("")
  for name in SECTIONS:
    entry = (record.get("sections") or {}).get(name)
    if entry is not None:
      lines += section(name, entry)
  return "\n".join(lines)
