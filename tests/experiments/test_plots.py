"""The plots tell every optimizer's line apart."""

from __future__ import annotations

from quantmuon_experiments import plots


def test_every_optimizer_has_its_own_style():
  names = [f"opt{i}" for i in range(12)] + ["muon"]
  style = plots.styles(names, reference="muon")
  assert style["muon"]["color"] == "black"
  keys = {(s["color"], s["linestyle"], s["marker"]) for s in style.values()}
  assert len(keys) == len(names)
