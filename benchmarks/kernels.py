"""Fused momentum kernels against the unfused XLA path, on this device.

For each kernel and size: the time of one momentum step of one leaf (decode,
accumulate, encode, emit), its effective bandwidth (the bytes one fused
pass must move, read + written, over the time), and the ratio of the fused
(Pallas, ``impl="pallas"``) to the unfused (XLA, ``impl="xla"``) time.
On a GPU or TPU it also checks the kernel against XLA on the device: the
fraction of codes that differ (rounding: Triton divides and contracts
differently) and the largest relative difference of the fresh momentum.

On a CPU only the XLA path runs (Pallas kernels run on CPU only in
interpret mode, an emulator not worth timing), with a quick default size.

Steps run inside ``lax.fori_loop`` (``--steps`` a call) with the state and
the fresh momentum carried, so every step writes both in full and the
dispatch of a call is shared by the steps.

Usage (from the repository root)::

  python benchmarks/kernels.py                          # CPU: 1M
  python benchmarks/kernels.py --sizes 1M,16M,64M       # GPU/TPU
  python benchmarks/kernels.py --kernels blockwise8 --tile-elements 2048,8192

Results go to ``benchmarks/results/kernels_<device>.json`` with the date
and the device.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo importable
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import quantmuon as qm  # noqa: E402
from benchmarks import common  # noqa: E402
from quantmuon import formats as F  # noqa: E402
from quantmuon.formats import layout  # noqa: E402
from quantmuon.kernels import dispatch, gpu  # noqa: E402

F16 = jnp.float16
# name -> (format, accumulation, normalize, nesterov): the presets' leaves.
KERNELS: dict[str, tuple[F.Format, str, bool, bool]] = {
    "blockwise8": (F.Blockwise(bits=8), "sum", False, True),
    "blockwise8_dynamic": (F.Blockwise(bits=8, codebook="dynamic"), "sum",
                           False, True),
    "blockwise4_b128": (F.Blockwise(bits=4, block_size=128), "sum", False,
                        False),
    "blockwise4_mulaw_muonq": (F.Blockwise(bits=4, codebook="mulaw",
                                           block_size=128, scale_dtype=F16),
                               "sum", True, False),
    "axiswise4_tensor": (F.Axiswise(bits=4), "sum", False, False),
    "grid4": (F.Grid(bits=4), "sum", False, False),
    "subspace_grasp": (F.Subspace(factors=F.Blockwise(bits=8,
                                                      block_size=128),
                                  residual=F.Grid(bits=4)), "sum", False,
                       False),
    "subspace_muonq": (F.Subspace(
        factors=F.Axiswise(bits=4, codebook="mulaw", axis="col",
                           scale_dtype=F16),
        residual=F.Axiswise(bits=4, codebook="mulaw", scale_dtype=F16)),
        "sum", True, False),
}
# Read + write bandwidth of devices, bytes/s (vendor figures), by a
# substring of the lower-case device kind; the first match counts, so a
# longer name comes before its prefix ("tpu v5 lite", v5e, before "tpu v5",
# v5p's kind).
PEAK_BANDWIDTH = {
    "h100 pcie": 2.0e12, "h100 nvl": 3.9e12, "h100": 3.35e12,
    "h200": 4.8e12, "a100-sxm4-80gb": 2.04e12, "a100 80gb pcie": 1.935e12,
    "a100": 1.555e12, "tpu v4": 1.2e12, "tpu v5 lite": 8.2e11,
    "tpu v5e": 8.2e11, "tpu v5p": 2.76e12, "tpu v5": 2.76e12,
    "tpu v6 lite": 1.64e12, "tpu v6e": 1.64e12,
}


def parse_size(text: str) -> int:
  """``1M`` -> 2**20, ``64M`` -> 64 * 2**20, ``1000`` -> 1000."""
  text = text.strip().upper()
  scale = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}.get(text[-1:], 1)
  return int(float(text.rstrip("KMG")) * scale)


def matrix(size: int) -> tuple[int, int]:
  """A matrix of ``size`` elements: rows of 4096 (8192 above 16M)."""
  n = 4096 if size <= 2 ** 24 else 8192
  n = min(n, size)
  return layout.ceil_div(size, n), n


def device_name() -> str:
  device = jax.devices()[0]
  return getattr(device, "device_kind", device.platform)


def peak_bandwidth(name: str) -> float | None:
  """A device kind's peak memory bandwidth in bytes/s (``PEAK_BANDWIDTH``),
  or None for a kind it does not list."""
  low = name.lower()
  for key, value in PEAK_BANDWIDTH.items():
    if key in low:
      return value
  return None


def fused_bytes(fmt: F.Format, shape: tuple[int, int]) -> int:
  """Bytes one fused pass moves: state in and out, gradient, fresh out."""
  state = qm.nbytes(fmt.init(shape))
  return 2 * state + 2 * 4 * shape[0] * shape[1]


def stepper(name: str, impl: str, steps: int) -> Callable[..., Any]:
  """Jitted ``steps`` momentum steps of one leaf, state and fresh carried."""
  fmt, accumulation, normalize, nesterov = KERNELS[name]
  del fmt

  def one(i, carry, g):
    stored, _ = carry
    fresh, stored = dispatch.momentum_step(
        stored, g, beta=0.95, accumulation=accumulation, normalize=normalize,
        nesterov=nesterov, count=i + 1, key=jax.random.key(0), impl=impl)
    return stored, fresh

  def run(stored, fresh, g):
    return jax.lax.fori_loop(0, steps, lambda i, c: one(i, c, g),
                             (stored, fresh))

  return jax.jit(run, donate_argnums=(0, 1))


def time_steps(fn: Callable[..., Any], stored: Any, g: jax.Array,
               repeats: int, steps: int) -> tuple[float, Any]:
  """Median seconds a step, and the last (state, fresh)."""
  carry = fn(stored, jnp.zeros_like(g), g)  # compiles and warms up
  jax.block_until_ready(carry)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    carry = fn(*carry, g)
    jax.block_until_ready(carry)
    times.append((time.perf_counter() - start) / steps)
  return float(np.median(times)), carry


def agreement(name: str, stored: Any, g: jax.Array, fused_impl: str
              ) -> dict[str, float]:
  """One step from the same state by XLA and by the kernel, compared."""
  out = {}
  results = [stepper(name, impl, 1)(jax.tree.map(jnp.copy, stored),
                                    jnp.zeros_like(g), g)
             for impl in ("xla", fused_impl)]
  (ref_state, ref_fresh), (state, fresh) = results
  codes = [(a, b) for a, b in zip(jax.tree.leaves(ref_state),
                                  jax.tree.leaves(state), strict=True)
           if a.dtype == jnp.uint8]
  differ = sum(int(jnp.sum(a != b)) for a, b in codes)
  out["codes_differ"] = differ / max(1, sum(a.size for a, _ in codes))
  scale = float(jnp.max(jnp.abs(ref_fresh)))
  out["fresh_max_rel_diff"] = float(jnp.max(jnp.abs(fresh - ref_fresh))) / (
      scale or 1.0)
  return out


def random_state(fmt: F.Format, shape: tuple[int, int]) -> Any:
  m = jax.random.normal(jax.random.key(1), shape, jnp.float32)
  return jax.jit(lambda x: fmt.encode(x, key=jax.random.key(2)))(m)


def fused(name: str, fmt: F.Format, shape: tuple[int, int], g: jax.Array,
          moved: int, xla_s: float, repeats: int, steps: int,
          tile_elements: list[int], fused_impl: str, peak: float | None
          ) -> dict[str, Any]:
  """The fused path's columns of a row: time, bandwidth, agreement."""
  best = None
  for tile in tile_elements:
    gpu.TILE_ELEMENTS = tile
    fused_s, _ = time_steps(stepper(name, fused_impl, steps),
                            random_state(fmt, shape), g, repeats, steps)
    if best is None or fused_s < best[0]:
      best = (fused_s, tile)
  fused_s, tile = best
  gpu.TILE_ELEMENTS = tile
  row = {"fused_ms": fused_s * 1e3, "fused_GBps": moved / fused_s / 1e9,
         "fused_over_xla": fused_s / xla_s, "tile_elements": tile}
  if peak:
    row["fused_pct_peak"] = 100 * moved / fused_s / peak
  row.update(agreement(name, random_state(fmt, shape), g, fused_impl))
  return row


def run(names: list[str], sizes: list[int], repeats: int, steps: int,
        tile_elements: list[int], fused_impl: str | None
        ) -> list[dict[str, Any]]:
  """Times every kernel at every size.

  Args:
    names: kernels (keys of ``KERNELS``).
    sizes: elements a leaf.
    repeats: timed calls (the median is kept).
    steps: steps a call.
    tile_elements: GPU tile sizes to try for the fused path.
    fused_impl: ``pallas``, ``pallas_interpret`` (a dry run on CPU) or None
      (XLA only).

  Returns:
    One row a kernel and size.
  """
  peak = peak_bandwidth(device_name())
  rows = []
  for size in sizes:
    shape = matrix(size)
    g = jax.random.normal(jax.random.key(0), shape, jnp.float32)
    for name in names:
      fmt = KERNELS[name][0]
      moved = fused_bytes(fmt, shape)
      row: dict[str, Any] = {"kernel": name, "elements": size,
                             "shape": f"{shape[0]}x{shape[1]}",
                             "bytes": moved}
      xla_s, _ = time_steps(stepper(name, "xla", steps),
                            random_state(fmt, shape), g, repeats, steps)
      row.update(xla_ms=xla_s * 1e3, xla_GBps=moved / xla_s / 1e9)
      if fused_impl:
        try:
          row.update(fused(name, fmt, shape, g, moved, xla_s, repeats, steps,
                           tile_elements, fused_impl, peak))
        except Exception as err:  # noqa: BLE001 - keep the other rows
          row["fused_error"] = f"{type(err).__name__}: {err}"[:300]
      rows.append(row)
      print({k: (f"{v:.4g}" if isinstance(v, float) else v)
             for k, v in row.items()}, flush=True)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  cpu = jax.default_backend() == "cpu"
  parser.add_argument("--sizes", default="1M" if cpu else "1M,16M,64M",
                      help="elements per leaf, e.g. 1M,16M,64M")
  parser.add_argument("--kernels", default=",".join(KERNELS),
                      help=f"some of {','.join(KERNELS)}")
  parser.add_argument("--repeats", type=int, default=3 if cpu else 10)
  parser.add_argument("--steps", type=int, default=2 if cpu else 10,
                      help="steps a timed call runs (fori_loop)")
  parser.add_argument("--tile-elements", default=str(gpu.TILE_ELEMENTS),
                      help="GPU tile sizes to try; the fastest is kept")
  parser.add_argument("--fused-impl", default=None if cpu else "pallas",
                      choices=["pallas", "pallas_interpret"],
                      help="the fused path (default: pallas off the CPU, "
                      "none on it; pallas_interpret is a dry run)")
  args = parser.parse_args()
  names = args.kernels.split(",")
  unknown = sorted(set(names) - set(KERNELS))
  if unknown:
    parser.error(f"unknown kernels {unknown}; choose from {list(KERNELS)}")
  sizes = [parse_size(s) for s in args.sizes.split(",")]
  tiles = [int(t) for t in args.tile_elements.split(",")]
  rows = run(names, sizes, args.repeats, args.steps, tiles, args.fused_impl)
  device = device_name()
  columns = ["kernel", "shape", "xla_ms", "xla_GBps"]
  if args.fused_impl:
    columns += ["fused_ms", "fused_GBps", "fused_over_xla", "fused_pct_peak",
                "codes_differ", "fresh_max_rel_diff", "fused_error"]
  slug = re.sub(r"[^a-z0-9]+", "_", device.lower()).strip("_")
  if args.fused_impl == "pallas_interpret":
    slug += "_interpret"  # a dry run never replaces a device's numbers
  common.report(f"kernels_{slug}", rows, columns, meta={
      "device": device, "peak_bandwidth_Bps": peak_bandwidth(device),
      "sizes": sizes, "steps": args.steps, "repeats": args.repeats,
      "fused": args.fused_impl,
      "note": None if not cpu else (
          "CPU: the XLA path is timed; Pallas kernels run on a CPU only in "
          "interpret mode (an emulator)")})


if __name__ == "__main__":
  main()
