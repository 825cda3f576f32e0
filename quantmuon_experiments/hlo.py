"""The collectives of a compiled program, read from its HLO text.

The sharded tests (``tests/sharded_checks.py``) and the sharded step
benchmark (``benchmarks/sharded_step.py``) count the communication of a
compiled step with :func:`collectives`:

    text = jax.jit(step).lower(*args).compile().as_text()
    found = hlo.collectives(text)
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all",
               "collective-permute")
_COLLECTIVE = re.compile(
    r"=\s*(?P<type>\(?[a-z0-9]+\[[^=]*?)\s+(?P<kind>"
    + "|".join(COLLECTIVES) + r")(-start)?\(")
_COMMENT = re.compile(r"/\*.*?\*/")
_ARRAY = re.compile(r"([a-z]+[0-9]*)\[([0-9,]*)\]")


class Collective(NamedTuple):
  """One collective of a compiled program.

  Attributes:
    kind: ``all-gather``, ``all-reduce``, ``reduce-scatter``,
      ``all-to-all`` or ``collective-permute``.
    elements: elements of its result (summed over a tuple result).
    nbytes: bytes of its result.
  """
  kind: str
  elements: int
  nbytes: int


def collectives(hlo_text: str) -> list[Collective]:
  """The collectives in compiled HLO text, in program order.

  Args:
    hlo_text: ``jax.jit(f).lower(...).compile().as_text()``.

  Returns:
    One ``Collective`` per collective instruction (an async pair counts
    once, by its ``-start``).
  """
  found = []
  for line in hlo_text.splitlines():
    # Long tuple types carry /*index=5*/ comments, whose "=" would end the
    # type early.
    match = _COLLECTIVE.search(_COMMENT.sub("", line))
    if match is None:
      continue
    elements = nbytes = 0
    for dtype, dims in _ARRAY.findall(match.group("type")):
      size = math.prod(int(d) for d in dims.split(",") if d)
      elements += size
      nbytes += size * _itemsize(dtype)
    found.append(Collective(match.group("kind"), elements, nbytes))
  return found


def _itemsize(hlo_dtype: str) -> int:
  """Bytes of an HLO element type (``f32``, ``u8``, ``pred``, ...)."""
  if hlo_dtype == "pred":
    return 1
  bits = re.search(r"[0-9]+", hlo_dtype)
  return max(1, int(bits.group()) // 8) if bits else 1
