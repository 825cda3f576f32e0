"""Shared pytest setup: CPU-only JAX and small, deadline-free hypothesis runs.

Compilation dominates the time of these tests, so hypothesis runs few
examples and has no deadline (a first example of a new shape compiles).
Choose another profile with ``HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "default", max_examples=20, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow,
                           HealthCheck.data_too_large])
settings.register_profile(
    "thorough", max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow,
                           HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def rng() -> np.random.Generator:
  """A seeded numpy generator, the same in every test."""
  return np.random.default_rng(0)
