"""Floating-point-quantized Adam and Muon (arXiv 2510.21314), as it claims.

"A Convergence Analysis of Adaptive Optimizers under Floating-point
Quantization" rounds the gradients (G), weights (W), first moments (M) and
second moments (V) to a float format with M mantissa bits (relative error
q = Theta(2^-M)) and proves that Adam keeps its rate only with q_G, q_M =
O(1/T) and q_W, q_V = O(1/T^2), Muon with every q = O(T^-1/2), so that the
mantissa needs to grow only like log T. Its findings, tested here as they
are stated, as functions of the number of steps T:

- (a) the error falls as mantissa bits grow (reported separately for
  components that are insensitive at every width and for the others);
- (b) Muon tolerates fewer bits: the width Muon needs grows more slowly
  with log2 T than the width Adam needs, component by component;
- (c) Adam is most sensitive to its weights and second moments: they need
  the most bits;
- (d) a mantissa growing like log t suffices: a log schedule does at least
  as well as a constant width of the same average bits, at every T.

The study's parts, one job each:

- ``problems``: the training problems (Rosenbrock, a digits MLP);
- ``runner``: the quantized optimizers and the vmapped, scanned runs over
  settings, seeds and T (``experiment``);
- ``statistics``: paired ratios to fp32, the needed width c*(T), bootstrap
  intervals over seeds;
- ``verdicts``: findings (a)-(d) from the runs (``analyse``), as tables and
  text;
- ``plots``: c*(T) against T;
- ``__main__``: the command, which writes
  ``benchmarks/results/fp_quantization.json`` and ``.png``.

Usage (from the repository root):
  python -m benchmarks.fp_study [--seeds 10] [--steps 256,...,4096]
"""

from benchmarks.fp_study import plots, problems, runner, statistics, verdicts

__all__ = ["plots", "problems", "runner", "statistics", "verdicts"]
