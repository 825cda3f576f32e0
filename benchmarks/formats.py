"""Quality and size of every storage format on a momentum-like matrix.

The matrix is the heavy-ball momentum (beta 0.95) of the first layer of a
small two-layer network trained on heavy-tailed inputs with a low-rank
teacher (see ``quantmuon_experiments.demo.momentum_matrix``); no data is
downloaded.
For every format (Float fp32 / bf16; Blockwise linear, dynamic and mu-law at
8, 4 and 2 bits with blocks of 2048 and 128; Axiswise per tensor, row and
column at 4 bits; Grid at 4 bits; simulated fp8 e4m3 and e5m2; MuonQ- and
GRASP-style Subspace) it records the relative error, the cosine similarity,
the relative error after Newton-Schulz and the bytes per element, in
``benchmarks/results/formats.json``.

Usage (from the repository root):
  python -m benchmarks.formats [--rows 512] [--cols 2048] [--steps 40]
"""

from __future__ import annotations

import argparse
import time

from benchmarks import common
from quantmuon_experiments import demo


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=512)
  parser.add_argument("--cols", type=int, default=2048)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--warm-steps", type=int, default=3,
                      help="warm starts of the subspace formats")
  args = parser.parse_args()
  start = time.perf_counter()
  x = demo.momentum_matrix(args.rows, args.cols, args.steps)
  rows = demo.compare(x, warm_steps=args.warm_steps)
  settings = {
      "matrix": "momentum of a two-layer tanh network's first layer, "
                "Student-t(3) inputs, low-rank teacher",
      "shape": list(x.shape), "steps": args.steps, "beta": 0.95,
      "warm_steps": args.warm_steps,
      "newton_schulz": "quintic (3.4445, -4.7750, 2.0315), 5 steps",
      "seconds": round(time.perf_counter() - start, 1),
  }
  common.report("formats", rows, demo.COLUMNS, settings)


if __name__ == "__main__":
  main()
