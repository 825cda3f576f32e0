"""The prepared accelerator check (issue 26), one module a job.

- ``__main__``: ``python -m benchmarks.accelerator [--smoke] [--out DIR]``,
  the orchestrator: budget, workers, the record.
- ``plan``: every size of the full run and of the CPU smoke, the pipelines
  and presets it knows.
- ``record``: the time budget and ``accelerator.json``, written after each
  section.
- ``device_worker``: the sections that hold the device, in their own
  process: ``agreement`` (kernels), ``bandwidth``, ``step``.
- ``quality``: a short compare run against the CPU's record.
- ``scale`` and ``scale_worker``: the memory of a real training step, one
  process per optimizer.
- ``decide``: targets met or not, and the defaults a device run argues for.
- ``report``: ``accelerator.md``.
"""
