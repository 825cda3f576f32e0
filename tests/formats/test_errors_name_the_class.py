"""A format's construction errors name the class that raised them."""

from __future__ import annotations

import pytest

from quantmuon import formats


@pytest.mark.parametrize("make, message", [
    (lambda: formats.Blockwise(bits=3),
     r"^Blockwise: bits must be one of \(2, 4, 8\)"),
    (lambda: formats.Grid(bits=3), r"^Grid: bits must be one of"),
    (lambda: formats.Axiswise(4, axis="diag"), r"^Axiswise: axis must be"),
    (lambda: formats.Subspace(rank_divisor=0),
     r"^Subspace: rank_divisor must be a positive integer, got 0\.$"),
])
def test_errors_name_the_class(make, message):
  with pytest.raises(ValueError, match=message):
    make()
