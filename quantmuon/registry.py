"""Every preset variant by name: the one registry the experiments, the
benchmarks and the tests read.

``get("muon_lowbit_2bit")(3e-3)`` builds ``muon_lowbit(3e-3, bits=2)``;
``get("muon_lowbit_2bit_fp32")`` is its exact full-precision twin.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import optax

from quantmuon import presets

TWIN_SUFFIX = "_fp32"


@dataclasses.dataclass(frozen=True)
class Variant:
  """A preset with some of its own arguments fixed.

  Attributes:
    preset: the preset (or a twin, from :func:`presets.full_precision_twin`).
    fixed: the arguments it is called with, before the caller's.
  """

  preset: Any
  fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __call__(self, *args: Any, **kwargs: Any
               ) -> optax.GradientTransformationExtraArgs:
    return self.preset(*args, **self.fixed, **kwargs)

  def options(self, *args: Any, **kwargs: Any) -> tuple[Any,
                                                        presets.MuonOptions]:
    """The learning rate and the options a call builds (see
    :meth:`quantmuon.presets.Preset.options`)."""
    return self.preset.options(*args, **self.fixed, **kwargs)

  @property
  def twin(self) -> Variant:
    """The same variant with float32 state."""
    return Variant(presets.full_precision_twin(self.preset), self.fixed)

  @property
  def quantized(self) -> bool:
    """Whether its state is quantized (it differs from its twin)."""
    return self.options(1.0)[1] != self.twin.options(1.0)[1]


FULL_PRECISION = {
    "muon": Variant(presets.muon),
    # Moonlight's consistent-RMS rule: the quantized presets' rate.
    "muon_rms": Variant(presets.muon, {"consistent_rms": 0.2}),
}
QUANTIZED = {
    "muon_8bit": Variant(presets.muon_8bit),
    "muon_8bit_dynamic": Variant(presets.muon_8bit, {"scheme": "dynamic"}),
    "muon_4bit": Variant(presets.muon_4bit),
    "muonq": Variant(presets.muonq),
    "muon_grasp": Variant(presets.muon_grasp),
    "muon_lowbit": Variant(presets.muon_lowbit),
    "muon_lowbit_2bit": Variant(presets.muon_lowbit, {"bits": 2}),
}
VARIANTS: dict[str, Variant] = {
    **FULL_PRECISION, **QUANTIZED,
    **{name + TWIN_SUFFIX: v.twin for name, v in QUANTIZED.items()}}
NAMES = tuple(VARIANTS)


def get(name: str) -> Variant:
  """The variant named ``name`` (a quantized one's twin is
  ``<name>_fp32``).

  Raises:
    ValueError: for an unknown name, listing the known ones.
  """
  if name not in VARIANTS:
    raise ValueError(f"unknown preset {name!r}; use one of "
                     f"{', '.join(NAMES)}.")
  return VARIANTS[name]


def twin_of(name: str) -> str | None:
  """The name of a quantized variant's twin, else None."""
  return name + TWIN_SUFFIX if name in QUANTIZED else None
