"""What a record shows: its targets, met or not, and the defaults it argues for.

:func:`evaluate` reads an ``accelerator.json`` record (any subset of its
sections) and returns

- ``targets``: one row per target of the check (issue 26) with the
  measured value and ``met`` (True, False, or None where the record
  cannot tell: a section missing, the CPU smoke, another corpus);
- ``decisions``: :func:`pipeline_choice` and :func:`impl_choice`, the
  defaults a GPU/TPU run argues for. They change nothing by themselves:
  a session applies them to the library (``quantized_muon``'s ``pipeline``
  and ``impl`` selection) after reading the record, and records why.

``python -m benchmarks.accelerator.decide [accelerator.json]`` prints both.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from typing import Any

from benchmarks.accelerator import plan as plan_lib

PEAK_TARGET_PCT = 85.0
# The formats held to the bandwidth target (keys of benchmarks.kernels).
PEAK_TARGET_FORMATS = ("blockwise8", "blockwise4_b128")
UPDATE_TOL = 1e-5
# Codes that may differ, as a share of all codes, and still be rounding
# ties: a value must fall within a rounding error of a decision boundary.
TIE_FRACTION = 1e-3
# A device loss within this many seed standard deviations of the CPU's
# equals it "within seed noise".
QUALITY_SIGMAS = 2.0


def _rows(record: dict[str, Any], section: str) -> list[dict[str, Any]]:
  entry = record.get("sections", {}).get(section) or {}
  return entry.get("rows") or []


def _on_device(record: dict[str, Any]) -> bool:
  return record.get("mode") == "full" and (
      record.get("environment") or {}).get("backend") not in (None, "cpu")


def _target(section: str, target: str, measured: Any, met: bool | None,
            note: str = "") -> dict[str, Any]:
  return {"section": section, "target": target, "measured": measured,
          "met": met, "note": note}


def kernel_targets(record: dict[str, Any]) -> list[dict[str, Any]]:
  """Kernels: the kernel ran, codes agree up to ties, updates within 1e-5."""
  rows = [r for r in _rows(record, "kernels") if "error" not in r]
  errors = [f"{r['preset']} {r['shape']}" for r in _rows(record, "kernels")
            if "error" in r]
  if not rows and not errors:
    return []
  interpret = (record["sections"]["kernels"].get("settings", {}).get(
      "impl") == "pallas_interpret")
  ran = sum(bool(r.get("kernel_ran")) for r in rows)
  differ = sum(r["codes_differ"] for r in rows)
  total = sum(r["codes_total"] for r in rows) or 1
  worst = max((r["fresh_max_rel_diff"] for r in rows), default=None)
  return [
      _target("kernels", "every kernel lowers to its device kernel",
              f"{ran} of {len(rows) + len(errors)} ran"
              + (f"; failed: {', '.join(errors)}" if errors else ""),
              None if interpret else ran == len(rows) and not errors,
              "interpret mode (CPU)" if interpret else ""),
      _target("kernels", "codes identical up to rounding ties",
              f"{differ} of {total} differ", differ / total <= TIE_FRACTION,
              f"ties allowed: {TIE_FRACTION:g} of the codes"),
      _target("kernels", f"updates within {UPDATE_TOL:g} (relative)",
              worst, worst is not None and worst <= UPDATE_TOL),
  ]


def bandwidth_targets(record: dict[str, Any]) -> list[dict[str, Any]]:
  """Bandwidth: >= 85% of peak (8- and 4-bit Blockwise), faster than XLA."""
  rows = _rows(record, "bandwidth")
  if not rows:
    return []
  out = []
  for row in rows:
    if row["format"] in PEAK_TARGET_FORMATS:
      pct = row.get("fused_pct_peak")
      out.append(_target(
          "bandwidth", f"{row['format']} {row['shape']}: fused step >= "
          f"{PEAK_TARGET_PCT:g}% of peak bandwidth", pct,
          None if pct is None else pct >= PEAK_TARGET_PCT,
          "" if pct is not None else "no peak or no fused timing"))
  timed = [r for r in rows if r.get("fused_over_xla") is not None]
  failed = [r for r in rows if r.get("fused_error")]
  slower = [f"{r['format']} {r['shape']}" for r in timed + failed
            if r in failed or r["fused_over_xla"] >= 1]
  out.append(_target(
      "bandwidth", "fused step faster than XLA's for every format",
      f"{len(timed) - len(slower) + len(failed)} of {len(rows)} faster"
      + (f"; not: {', '.join(slower)}" if slower else ""),
      None if not (timed or failed) else not slower,
      "" if timed or failed else "fused path not timed"))
  return out


def quality_targets(record: dict[str, Any]) -> list[dict[str, Any]]:
  """Quality: the device's losses equal the CPU's within seed noise."""
  out = []
  for row in _rows(record, "quality"):
    if "cpu_final_val_loss" not in row:
      continue
    comparable = row.get("same_config") and row.get("same_corpus")
    std = row.get("seed_std")
    met = (abs(row["diff"]) <= QUALITY_SIGMAS * std
           if comparable and std is not None else None)
    note = ("" if comparable else "not comparable: "
            + ("another corpus" if row.get("same_config")
               else "another config"))
    out.append(_target(
        "quality", f"{row['optimizer']}: final loss = CPU's within "
        f"{QUALITY_SIGMAS:g} seed std", f"{row['diff']:+.4f} "
        f"(std {std if std is None else round(std, 4)})", met, note))
  return out


def memory_targets(record: dict[str, Any]) -> list[dict[str, Any]]:
  """Memory at scale: each quantized optimizer's peak below muon's."""
  return [_target("memory_at_scale", f"{r['optimizer']}: peak below muon's",
                  r["peak_vs_muon"], r["peak_vs_muon"] < 1)
          for r in _rows(record, "memory_at_scale")
          if r["optimizer"] != "muon" and r.get("peak_vs_muon") is not None]


def _median(ratio: dict[str, float] | None) -> float | None:
  return None if ratio is None else ratio["median"]


def pipeline_choice(step: dict[str, Any], memory_weight: float = 1.0,
                    min_gain: float = 0.03) -> dict[str, Any]:
  """The pipeline a device's step timings argue for.

  For each scale, preset and impl measured on the default pipeline and
  another, a pipeline's score is its time over the default's, less one,
  plus ``memory_weight`` times its compiled update memory over the
  default's, less one (so with weight 1, one percent of memory is worth
  one percent of time). The default scores 0. Another pipeline wins a
  group when it scores below ``-min_gain``; the choice is the default
  unless one pipeline wins every group.

  Args:
    step: the record's ``step`` section.
    memory_weight: what a fraction of the update's memory is worth in
      fractions of its time.
    min_gain: the least score by which another pipeline must win.

  Returns:
    ``choice`` (a pipeline), ``why`` (a sentence) and ``groups`` (each
    group's scores and winner).
  """
  groups: dict[tuple, dict[str, float]] = collections.defaultdict(dict)
  for row in step.get("rows") or []:
    if row["pipeline"] == plan_lib.DEFAULT_PIPELINE or "error" in row:
      continue
    time_ratio = _median(row.get("time_vs_default_pipeline"))
    memory_ratio = row.get("memory_vs_default_pipeline")
    if time_ratio is None or memory_ratio is None:
      continue
    key = (row["scale"], row["preset"], row["impl"])
    groups[key][row["pipeline"]] = (time_ratio - 1) + memory_weight * (
        memory_ratio - 1)
  out = []
  for (scale, preset, impl), scores in groups.items():
    best = min(scores, key=scores.get)
    winner = best if scores[best] < -min_gain else plan_lib.DEFAULT_PIPELINE
    out.append({"scale": scale, "preset": preset, "impl": impl,
                "scores": scores, "winner": winner})
  winners = {g["winner"] for g in out}
  if len(winners) == 1 and out:
    choice = winners.pop()
  else:
    choice = plan_lib.DEFAULT_PIPELINE
  if not out:
    why = "no pipeline measured beside the default"
  elif choice == plan_lib.DEFAULT_PIPELINE:
    why = (f"keep {choice}: no other pipeline beat it by more than "
           f"{min_gain:.0%} (time, plus memory at weight {memory_weight:g}) "
           f"in every group measured")
  else:
    why = (f"{choice} beat {plan_lib.DEFAULT_PIPELINE} in every group "
           f"measured by more than {min_gain:.0%} (time, plus memory at "
           f"weight {memory_weight:g})")
  return {"choice": choice, "why": why, "groups": out,
          "memory_weight": memory_weight, "min_gain": min_gain}


def impl_choice(step: dict[str, Any], min_gain: float = 0.03
                ) -> dict[str, Any]:
  """Per preset, ``auto`` (the kernels) or ``xla``, from the step timings.

  A preset takes ``xla`` when its ``auto`` update on the default pipeline
  is slower than its ``xla`` one by more than ``min_gain`` at any scale
  measured, else ``auto``.

  Args:
    step: the record's ``step`` section.
    min_gain: the slowdown tolerated before choosing ``xla``.

  Returns:
    ``choice`` (preset -> impl) and ``ratios`` (preset -> scale -> the
    median auto/xla time ratio).
  """
  ratios: dict[str, dict[str, float]] = collections.defaultdict(dict)
  for row in step.get("rows") or []:
    ratio = _median(row.get("time_vs_xla"))
    if (row.get("impl") == "auto" and ratio is not None
        and row["pipeline"] == plan_lib.DEFAULT_PIPELINE):
      ratios[row["preset"]][row["scale"]] = ratio
  choice = {preset: "xla" if max(by_scale.values()) > 1 + min_gain
            else "auto" for preset, by_scale in ratios.items()}
  return {"choice": choice, "ratios": dict(ratios), "min_gain": min_gain}


def round_trips(record: dict[str, Any]) -> list[dict[str, Any]]:
  """What the default pipeline's conditionals cost beside the chain.

  Returns:
    Per scale and preset timed with both (the step section): the median
    leafwise/chain time ratio, the extra microseconds per Muon leaf and
    the conditionals; then per profiled variant (the profile section):
    device-to-host copies and synchronizations per step.
  """
  sections = record.get("sections") or {}
  out = []
  for scale, result in ((sections.get("step") or {}).get("scales")
                        or {}).items():
    for summary in result.get("pipelines") or []:
      out.append({"source": "step", "scale": scale,
                  "variant": summary["preset"],
                  "leafwise_over_chain": summary["leafwise_over_chain"][
                      "median"],
                  "extra_us_per_leaf": summary["extra_us_per_leaf"],
                  "conditionals": summary["conditionals"]})
  for row in _rows(record, "profile"):
    if "error" not in row:
      out.append({"source": "profile", "scale": row["scale"],
                  "variant": row["variant"],
                  "conditionals": row["conditionals"],
                  "d2h_per_step": row["d2h_per_step"],
                  "syncs_per_step": row["syncs_per_step"]})
  return out


def evaluate(record: dict[str, Any]) -> dict[str, Any]:
  """Targets and decisions of a record (see the module docstring)."""
  step = (record.get("sections") or {}).get("step") or {}
  decisions = {"on_device": _on_device(record),
               "pipeline": pipeline_choice(step),
               "impl": impl_choice(step),
               "round_trips": round_trips(record)}
  if not decisions["on_device"]:
    decisions["note"] = ("measured on the CPU or in the smoke mode: not a "
                         "ground for changing the GPU/TPU defaults")
  return {"targets": (kernel_targets(record) + bandwidth_targets(record)
                      + quality_targets(record) + memory_targets(record)),
          "decisions": decisions}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("record", nargs="?",
                      default="benchmarks/results/accelerator.json")
  record = json.loads(Path(parser.parse_args().record).read_text())
  print(json.dumps(evaluate(record), indent=1))


if __name__ == "__main__":
  main()
