"""The demo (``quantmuon-demo``) and the table helper the benchmarks share."""

from __future__ import annotations

import numpy as np
import pytest

from quantmuon.formats import Axiswise, Blockwise, FloatingPoint, Grid, Subspace
from quantmuon_experiments import demo


def test_formats_cover_every_family():
  table = demo.formats()
  kinds = {type(fmt) for fmt in table.values()}
  assert {Axiswise, Blockwise, FloatingPoint, Grid, Subspace} <= kinds
  for block in (2048, 128):
    for bits in (8, 4, 2):
      for codebook in ("linear", "dynamic", "mulaw"):
        assert table[f"block{block}-{codebook}{bits}"] == Blockwise(
            bits=bits, codebook=codebook, block_size=block)


def test_demo_prints_a_table(capsys):
  demo.main(["--rows", "32", "--cols", "64", "--steps", "5", "--formats",
             "fp32,block128-linear8,block128-linear4,grasp-subspace4"])
  out = capsys.readouterr().out
  for word in ("rel_err", "cosine", "bytes_per_elem", "grasp-subspace4"):
    assert word in out
  lines = out.splitlines()
  fp32 = next(line for line in lines if line.startswith("fp32"))
  assert fp32.split()[1:] == ["0", "1", "0", "4"]


@pytest.fixture(scope="module")
def momentum() -> np.ndarray:
  return demo.momentum_matrix(32, 64, steps=5)


def test_momentum_is_heavy_tailed_and_low_rank(momentum):
  x = momentum
  assert x.shape == (32, 64) and x.dtype == np.float32
  assert np.all(np.isfinite(x))
  kurtosis = np.mean(x ** 4) / np.mean(x ** 2) ** 2
  assert kurtosis > 3.0  # heavier than Gaussian
  s = np.linalg.svd(x, compute_uv=False)
  assert s[:4].sum() ** 2 > 0.5 * np.sum(s ** 2)  # most energy in a few


def test_errors_shrink_with_bits(momentum):
  errs = [demo.evaluate(momentum, Blockwise(bits=b, block_size=64))["rel_err"]
          for b in (8, 4, 2)]
  assert errs[0] < errs[1] < errs[2]
