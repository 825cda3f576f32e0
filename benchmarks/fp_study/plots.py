"""The study's figure: c*(T) against T, Adam beside Muon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.fp_study.runner import COMPONENTS

COLORS = {"G": "tab:blue", "W": "tab:orange", "M": "tab:green",
          "V": "tab:red", "all": "tab:purple"}


def plot(data: dict[str, Any], v: dict[str, Any], path: Path) -> None:
  """c*(T) against T, Adam beside Muon, one line per component."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  problems = sorted({r["problem"] for r in data["records"]})
  fig, axes = plt.subplots(len(problems), 2, figsize=(11, 3.8 * len(problems)),
                           squeeze=False, sharey=True)
  for r in v["c_star"]:
    ax = axes[problems.index(r["problem"]),
              list(COMPONENTS).index(r["optimizer"])]
    ts = v["steps"]
    val = [r["by_steps"][str(t)]["value"] for t in ts]
    lo = [r["by_steps"][str(t)]["lo"] for t in ts]
    hi = [r["by_steps"][str(t)]["hi"] for t in ts]
    color = COLORS[r["component"]]
    ax.plot(ts, val, "o-", color=color,
            label=f"{r['component']} ({r['slope']['value']:+.2f}/doubling)")
    ax.fill_between(ts, lo, hi, color=color, alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_title(f"{r['problem']}: {r['optimizer']}")
    ax.set_xlabel("steps T")
    ax.set_ylabel(f"needed mantissa bits c* ({v['widest'] + 2}: none)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
