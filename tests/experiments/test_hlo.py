"""hlo.collectives reads the collectives of compiled HLO text."""

from __future__ import annotations

from quantmuon_experiments import hlo


def test_collectives_read_long_tuple_types():
  # Tuples of more than five arrays carry /*index=5*/ comments.
  line = ("%all-to-all.2 = (f32[1,32]{1,0}, f32[1,32]{1,0}, f32[1,32]{1,0}, "
          "f32[1,32]{1,0}, f32[1,32]{1,0}, /*index=5*/f32[1,32]{1,0}) "
          "all-to-all(%a, %b), dimensions={0}")
  assert hlo.collectives(line) == [hlo.Collective("all-to-all", 192, 768)]


def test_collectives_count_an_async_pair_once():
  text = ("%ag-start = (f32[4]{0}, f32[8]{0}) all-gather-start(%p), "
          "dimensions={0}\n"
          "%ag-done = f32[8]{0} all-gather-done(%ag-start)\n"
          "%ar = bf16[2,3]{1,0} all-reduce(%x), to_apply=%add\n")
  assert hlo.collectives(text) == [
      hlo.Collective("all-gather", 12, 48),
      hlo.Collective("all-reduce", 6, 12)]
