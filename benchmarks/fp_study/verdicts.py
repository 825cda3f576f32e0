"""Findings (a)-(d) decided from the runs, and their text and tables.

Each finding holds, is contradicted, or is not resolved, per row, from its
95% bootstrap interval (see ``statistics``); ``_verdict`` sums the rows up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.fp_study.runner import COMPONENTS, PARTS
from benchmarks.fp_study.statistics import (
    BOOTSTRAP,
    TOLERANCE,
    Table,
    ci,
    slope,
    spearman,
)
from quantmuon_experiments import tables


def analyse(data: dict[str, Any], resamples: int = BOOTSTRAP
            ) -> dict[str, Any]:
  """Decides findings (a)-(d) from the records (see the module doc)."""
  records = data["records"]
  table = Table(records, resamples)
  problems = sorted({r["problem"] for r in records})
  near = sorted({r["steps"] for r in records if r["rounding"] == "nearest"})
  bits = sorted({int(r["setting"]) for r in records
                 if r["setting"].isdigit()})
  big = near[-1]
  cs = {(p, o, c): np.stack([table.c_star((p, o, "nearest", t), c, bits)
                             for t in near], 1)
        for p in problems for o in COMPONENTS for c in COMPONENTS[o]}
  out: dict[str, Any] = {"tolerance": TOLERANCE, "steps": near,
                         "bits": bits, "resamples": resamples,
                         "widest": bits[-1], "c_star": [], "a": {},
                         "b": {}, "c": {}, "d": {}, "stochastic": []}
  for (p, o, c), v in cs.items():
    out["c_star"].append({"problem": p, "optimizer": o, "component": c,
                          "by_steps": {str(t): ci(v[:, i])
                                       for i, t in enumerate(near)},
                          "slope": ci(slope(near, v))})

  # (a) at the largest T: insensitive rows, and the others' trend.
  rows = []
  for p in problems:
    for o in COMPONENTS:
      for c in COMPONENTS[o]:
        key = (p, o, "nearest", big)
        logs = np.stack([table.ratio(key, c, str(b)) for b in bits], 1)
        rho = spearman(np.asarray(bits, np.float64), logs)
        insensitive = bool(np.all(logs[0] <= math.log(TOLERANCE)))
        rows.append({"problem": p, "optimizer": o, "component": c,
                     "insensitive": insensitive, "spearman": ci(rho),
                     "ratio_at_1": math.exp(logs[0, 0]),
                     "falls": (not insensitive) and ci(rho)["hi"] < 0})
  sensitive = [r for r in rows if not r["insensitive"]]
  out["a"] = {"rows": rows, "steps": big,
              "insensitive": len(rows) - len(sensitive),
              "sensitive": len(sensitive),
              "falls": sum(r["falls"] for r in sensitive),
              "verdict": _verdict([r["falls"] for r in sensitive])}

  # (b) growth of c* with log2 T, Adam against Muon.
  rows = []
  for p in problems:
    for c in COMPONENTS["muon"]:
      a, m = cs[(p, "adam", c)], cs[(p, "muon", c)]
      diff = slope(near, a) - slope(near, m)
      level = a.mean(1) - m.mean(1)
      rows.append({"problem": p, "component": c,
                   "adam_slope": ci(slope(near, a)),
                   "muon_slope": ci(slope(near, m)),
                   "slope_difference": ci(diff),
                   "level_difference": ci(level),
                   "holds": ci(diff)["lo"] > 0,
                   "contradicted": ci(diff)["hi"] < 0})
  out["b"] = {"rows": rows, "verdict": _verdict(
      [r["holds"] or (False if r["contradicted"] else None)
       for r in rows])}

  # (c) Adam: W and V need more bits (averaged over T) than G and M.
  rows = []
  for p in problems:
    mean = {c: cs[(p, "adam", c)].mean(1) for c in PARTS}
    gap = np.minimum(mean["W"], mean["V"]) - np.maximum(mean["G"],
                                                        mean["M"])
    rows.append({"problem": p, "mean_c_star": {c: ci(v)
                                               for c, v in mean.items()},
                 "gap": ci(gap), "holds": ci(gap)["lo"] > 0,
                 "contradicted": ci(gap)["hi"] < 0})
  out["c"] = {"rows": rows, "verdict": _verdict(
      [r["holds"] or (False if r["contradicted"] else None)
       for r in rows])}

  # (d) each log schedule against constant widths of its average bits.
  rows = []
  for p in problems:
    for o in COMPONENTS:
      for g in sorted({r["setting"] for r in records
                       if r["setting"].startswith("log")}):
        diffs = {}
        for t in near:
          key = (p, o, "nearest", t)
          mean_bits = table.bits[key][g]
          if not bits[0] <= mean_bits <= bits[-1]:
            continue
          const = np.stack([table.ratio(key, "all", str(b))
                            for b in bits], 1)
          at = np.array([np.interp(mean_bits, bits, row) for row in const])
          d = table.ratio(key, "all", g) - at
          diffs[str(t)] = {"mean_bits": mean_bits, "log_ratio": ci(d),
                           "schedule_ratio": math.exp(
                               table.ratio(key, "all", g)[0])}
        worse = sum(v["log_ratio"]["lo"] > 0 for v in diffs.values())
        better = sum(v["log_ratio"]["hi"] < 0 for v in diffs.values())
        rows.append({"problem": p, "optimizer": o, "schedule": g,
                     "by_steps": diffs, "better": better, "worse": worse,
                     "holds": None if not diffs else worse == 0})
  out["d"] = {"rows": rows, "verdict": _verdict([r["holds"] for r in rows])}

  # Stochastic rounding: c* at its T, against round-to-nearest.
  for t in sorted({r["steps"] for r in records
                   if r["rounding"] == "stochastic"}):
    for p in problems:
      for o in COMPONENTS:
        for c in COMPONENTS[o]:
          sr = table.c_star((p, o, "stochastic", t), c, bits)
          rn = table.c_star((p, o, "nearest", t), c, bits)
          out["stochastic"].append({"problem": p, "optimizer": o,
                                    "component": c, "steps": t,
                                    "stochastic": ci(sr), "nearest": ci(rn),
                                    "difference": ci(sr - rn)})
  return out


def _verdict(holds: Sequence[bool | None]) -> str:
  known = [h for h in holds if h is not None]
  if not known:
    return "not resolved (every interval includes no effect)"
  if all(known) and len(known) == len(holds):
    return "reproduces"
  if all(known):
    return "reproduces where resolved"
  return "partly reproduces" if any(known) else "does not reproduce"


def _w(c: float, widest: int) -> str:
  return f">{widest}" if c > widest else f"{c:g}"


def _iv(x: dict[str, float], fmt: str = "{:+.2f}") -> str:
  return (fmt.format(x["value"]) + " [" + fmt.format(x["lo"]) + ", "
          + fmt.format(x["hi"]) + "]")


def c_star_table(v: dict[str, Any]) -> str:
  """Markdown: c*(T) per row, and its slope on log2 T with its CI."""
  widest = v["widest"]
  header = (["problem", "optimizer", "quantized"]
            + [f"T={t}" for t in v["steps"]] + ["slope (bits / doubling)"])
  body = []
  for r in v["c_star"]:
    cells = []
    for t in v["steps"]:
      x = r["by_steps"][str(t)]
      cells.append(f"{_w(x['value'], widest)} "
                   f"[{_w(x['lo'], widest)}, {_w(x['hi'], widest)}]")
    body.append([r["problem"], r["optimizer"], r["component"]] + cells
                + [_iv(r["slope"])])
  return tables.markdown([dict(zip(header, row, strict=True))
                          for row in body], header)


def verdict_lines(v: dict[str, Any]) -> list[str]:
  """Human-readable findings, each with its numbers and 95% intervals."""
  widest = v["widest"]
  lines = [
      f"c*(T): the smallest mantissa width from which every wider width "
      f"(up to {widest}) is within {v['tolerance']:g}x of fp32's "
      f"run-average gradient norm (geometric mean over seeds, paired); "
      f">{widest} when none is; [95% bootstrap intervals over seeds]."]
  a = v["a"]
  falls = [f"{r['problem']}/{r['optimizer']}/{r['component']} "
           f"(x{r['ratio_at_1']:.3g} at 1 bit, Spearman "
           f"{_iv(r['spearman'])})" for r in a["rows"]
           if not r["insensitive"]]
  flat = [f"{r['problem']}/{r['optimizer']}/{r['component']}"
          for r in a["rows"] if r["insensitive"]]
  lines.append(
      f"(a) error falls as mantissa bits grow (T={a['steps']}): "
      f"{a['verdict']}: in {a['falls']} of the {a['sensitive']} sensitive "
      f"rows the Spearman interval lies below 0: {'; '.join(falls)}. "
      f"{a['insensitive']} rows match fp32 at every width, 1 bit included: "
      + (", ".join(flat) if flat else "none") + ".")
  parts = "; ".join(
      f"{r['problem']}/{r['component']}: Adam {_iv(r['adam_slope'])}, Muon "
      f"{_iv(r['muon_slope'])}, difference {_iv(r['slope_difference'])} "
      f"bits per doubling (mean c* Adam - Muon "
      f"{_iv(r['level_difference'])})" for r in v["b"]["rows"])
  lines.append(f"(b) the width Muon needs grows more slowly with log2 T "
               f"than Adam's: {v['b']['verdict']} ({parts}).")
  parts = "; ".join(
      f"{r['problem']}: " + ", ".join(
          f"{c} {_iv(x, '{:.2f}')}" for c, x in r["mean_c_star"].items())
      + f"; min(W, V) - max(G, M) {_iv(r['gap'])}" for r in v["c"]["rows"])
  lines.append(f"(c) Adam needs the most bits for W and V (mean c* over "
               f"T): {v['c']['verdict']} ({parts}).")
  parts = "; ".join(
      f"{r['problem']}/{r['optimizer']}/{r['schedule']}: " + ", ".join(
          f"T={t} {x['mean_bits']:.1f} bits x{x['schedule_ratio']:.2f} "
          f"fp32, log(schedule / constant) {_iv(x['log_ratio'])}"
          for t, x in r["by_steps"].items())
      + f" (better at {r['better']}, worse at {r['worse']} T)"
      for r in v["d"]["rows"])
  lines.append(f"(d) a log t schedule (all components) does as well as "
               f"constant widths of the same average bits (interpolated), "
               f"at every T: {v['d']['verdict']} ({parts}).")
  if v["stochastic"]:
    moved = [r for r in v["stochastic"]
             if r["difference"]["value"] != 0]
    t = v["stochastic"][0]["steps"]
    parts = "; ".join(
        f"{r['problem']}/{r['optimizer']}/{r['component']} nearest "
        f"{_w(r['nearest']['value'], widest)}, stochastic "
        f"{_w(r['stochastic']['value'], widest)}" for r in moved)
    lines.append(f"Stochastic rounding (T={t}), c* against "
                 f"round-to-nearest: the same in "
                 f"{len(v['stochastic']) - len(moved)} of "
                 f"{len(v['stochastic'])} rows"
                 + (f"; differs in {parts}" if moved else "") + ".")
  return lines
