"""The config every experiment starts from, and the named configs.

``base_config`` holds every field; ``quick_config`` (what
``quantmuon-compare`` runs without ``--config``), ``full_config`` (the
full study, ``configs/compare_full.py``) and ``train_config`` (what
``quantmuon-train`` runs without ``--config``) edit it, and so do the files
under configs/. ``get_config(name)`` makes this file a config file itself,
so the commands load their defaults the way they load any ``--config``.

Sections:
  task: ``lm`` (GPT on a byte corpus) or ``digits`` (MLP/CNN classifier).
  seed: model initialization and batch order.
  model: the network's shape (see ``lm_model`` and ``digits_model``).
  data: corpus path and split (``lm``), validation share (both).
  train: steps, batch size, evaluation, logging and checkpoint intervals,
    the progress output (``progress``) and the skipping of steps with
    non-finite gradients (``skip_nonfinite``, ``max_consecutive_skips``).
  mesh: the devices of a run, ``data`` x ``fsdp`` (see ``parallel.py``);
    1 x 1 is one device.
  optimizer: name and hyperparameters of a single run.
  optimizers, twins, seeds, reuse_runs, learning_rates, lr_sweep, lr_note,
    timing: what ``quantmuon-compare`` runs and how it times the steps (see
    ``compare.py`` and ``timing.py``); noise_pct, noise_note: the noise the
    report says a single seed cannot resolve; eta: the plan's first
    estimate of the time (see ``progress.Estimate``).
"""

from __future__ import annotations

import ml_collections

from quantmuon_experiments import optimizers


def lm_model(**overrides) -> ml_collections.ConfigDict:
  """A GPT decoder's shape (see ``model.GPTConfig``)."""
  fields = dict(vocab_size=256, context=128, width=128, depth=4, heads=4,
                mlp_ratio=4, tied_head=False, scan_layers=False)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def digits_model(**overrides) -> ml_collections.ConfigDict:
  """A digits classifier: ``kind`` ``mlp`` or ``cnn``, ``width``, ``depth``."""
  fields = dict(kind="mlp", width=256, depth=2)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def learning_rates(adamw: float, muon: float, muon_rms: float
                   ) -> ml_collections.ConfigDict:
  """Per-optimizer peak rates; every consistent-RMS preset shares ``muon_rms``.

  Args:
    adamw: AdamW's rate (also the AdamW part of width-scaled ``muon``).
    muon: width-scaled full-precision Muon's rate.
    muon_rms: the rate of full-precision consistent-RMS Muon and of the
      quantized presets, its twins.

  Returns:
    A ConfigDict ``name -> rate`` over every optimizer name.
  """
  group_rate = {"adamw": adamw, "muon": muon, "muon_rms": muon_rms}
  return ml_collections.ConfigDict(
      {name: group_rate[optimizers.rate_group(name)]
       for name in optimizers.NAMES})


def base_config() -> ml_collections.ConfigDict:
  """The full set of fields, with small defaults."""
  config = ml_collections.ConfigDict()
  config.task = "lm"
  config.seed = 0
  config.model = lm_model()
  config.data = ml_collections.ConfigDict(dict(
      path="",            # file or directory; "" = Python's stdlib source
      suffixes="",        # e.g. ".py,.txt"; "" = .py for the stdlib, else all
      max_bytes=0,        # 0 = read the whole corpus
      chunk_size=4096,    # split granularity (at least context + 1)
      val_fraction=0.1,
  ))
  config.train = ml_collections.ConfigDict(dict(
      steps=200,
      batch_size=32,
      eval_every=50,
      eval_batches=8,
      log_every=10,
      checkpoint_every=0,  # 0 = no checkpoints
      progress=True,       # False = no progress output at all
      skip_nonfinite=True,  # skip steps whose gradients are not finite
      max_consecutive_skips=10,  # stop as diverged after this many in a row
  ))
  # Devices: data parallel x FSDP (see parallel.py); 1 x 1 = one device.
  config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=1))
  config.optimizer = ml_collections.ConfigDict(dict(
      name="muon_8bit",
      learning_rate=3e-3,
      adam_learning_rate=0.0,  # 0 = same as learning_rate
      weight_decay=0.0,
      adam_weight_decay=0.0,
      warmup_steps=20,
      final_lr_ratio=0.1,
      options=ml_collections.ConfigDict(),  # extra preset keywords
  ))
  # What quantmuon-compare runs.
  config.optimizers = ",".join(("adamw", "muon", "muon_8bit",
                                "muon_8bit_dynamic", "muon_4bit", "muonq",
                                "muon_grasp", "muon_lowbit"))
  config.twins = True     # also run each quantized optimizer's fp32 twin
  config.seeds = ""       # e.g. "0,1,2"; "" = just config.seed
  config.reuse_runs = True  # read back finished runs of the same config
  config.learning_rates = learning_rates(adamw=3e-3, muon=0.02,
                                         muon_rms=3e-3)
  config.lr_sweep = ""    # rate multipliers, e.g. "0.5,1,2"; "" = no sweep
  config.lr_note = ""     # how the rates were found
  # Step times, apart from training: untimed calls first, then rounds of
  # ``steps`` steps per optimizer, interleaved.
  config.timing = ml_collections.ConfigDict(dict(warmup=3, repeats=7,
                                                 steps=5))
  # The spread (std, %) of a gap between two optimizers from seed to seed,
  # measured for the config with several seeds; 0 = not measured.
  config.noise_pct = 0.0
  config.noise_note = ""  # how noise_pct was measured
  # The plan's first time estimate, in seconds on a 2-core CPU: a run's
  # compilation and one training step; 0 = unknown (measured as it runs).
  config.eta = ml_collections.ConfigDict(dict(setup_s=0.0, step_s=0.0))
  return config


def quick_config() -> ml_collections.ConfigDict:
  """What ``quantmuon-compare`` runs without ``--config``: the headline in
  minutes on a laptop's CPU.

  Full-precision Muon, ``muon_8bit`` and ``muon_lowbit``, each quantized
  preset beside its exact full-precision twin, and AdamW: 6 runs of a
  small byte-level GPT on Python's standard-library source.

  Returns:
    The quick comparison config.
  """
  config = base_config()
  config.optimizers = "adamw,muon,muon_8bit,muon_lowbit"
  config.model = lm_model(context=64, width=64, depth=2, heads=4)
  config.data.max_bytes = 8 << 20
  config.train.steps = 300
  config.train.batch_size = 16
  config.train.eval_every = 25
  config.train.eval_batches = 4
  config.optimizer.warmup_steps = 30
  config.learning_rates = learning_rates(
      adamw=1.5e-3, muon=0.04, muon_rms=0.024)
  config.lr_note = (
      "swept earlier with this config, seed 0, on a 2-core CPU: final "
      "validation loss for rates x0.5, x1, x2, x4 of adamw 1.5e-3, muon "
      "0.04 and muon_rms 0.012. Best: adamw 1.5e-3 (2.426; 3e-3: 2.432), "
      "muon 0.04 (2.174; 0.02: 2.181), muon_rms 0.024 (1.994; 0.012: "
      "2.033, 0.048: 2.030). The quantized presets share muon_rms's rate.")
  config.timing.update(warmup=2, repeats=5, steps=5)
  config.noise_pct = 0.5
  config.noise_note = (
      "the standard deviation over seeds 0-3 of paired gaps, measured with "
      "--config.seeds=0,1,2,3: 0.59% and 0.41% for the quantization costs "
      "of muon_8bit and muon_lowbit, 0.38% and 0.32% for muon_8bit_fp32 "
      "and adamw against muon")
  # From CPU time measured on a loaded 2-core CPU (about 18 s a run).
  config.eta.update(setup_s=9.0, step_s=0.03)
  return config


def full_config() -> ml_collections.ConfigDict:
  """``configs/compare_full.py``: every optimizer on a 3-block width-128
  GPT, 300 steps.

  The configs under configs/ that vary it (``compare_wide.py``,
  ``lowbit_ablation.py``) start from here, since a config file loaded by
  path cannot import its neighbours.

  Returns:
    The comparison config, with the rates swept for it (``lr_note``).
  """
  config = base_config()
  config.optimizers = ",".join((
      "adamw", "muon", "muon_rms", "muon_8bit", "muon_8bit_dynamic",
      "muon_4bit", "muonq", "muon_grasp", "muon_lowbit", "muon_lowbit_2bit"))
  config.model = lm_model(context=64, width=128, depth=3, heads=4)
  config.train.steps = 300
  config.train.batch_size = 32
  config.train.eval_every = 25
  config.train.eval_batches = 8
  config.optimizer.warmup_steps = 30
  config.learning_rates = learning_rates(
      adamw=1.5e-3, muon=0.04, muon_rms=0.012)
  config.lr_note = (
      "swept earlier with this config, seed 0, on a 2-core CPU: final "
      "validation loss for rates x0.5, x1, x2, x4, x8 of adamw 3e-3, muon "
      "0.02 and muon_rms 3e-3, plus adamw 5e-4 and 1e-3. Best: adamw 1.5e-3 "
      "(2.095; 1e-3: 2.152, 3e-3: 2.173), muon 0.04 (1.633; 0.02: 1.636, "
      "0.08: 1.827), muon_rms 0.012 (1.590; 6e-3: 1.654, 0.024: 1.621). "
      "The quantized presets use consistent-RMS scaling and share "
      "muon_rms's rate; width-scaled muon's AdamW part uses adamw's. "
      "Rerun around these values with --config.lr_sweep=0.5,1,2.")
  # 29.2 min for the 14 runs on a 2-core CPU (2026-12-01): 0.3 s a step.
  config.eta.update(setup_s=12.0, step_s=0.32)
  return config


def train_config() -> ml_collections.ConfigDict:
  """What ``quantmuon-train`` runs without ``--config``: one ``muon_8bit``
  run of the base GPT, 300 steps, a checkpoint every 100."""
  config = base_config()
  config.train.steps = 300
  config.train.checkpoint_every = 100
  config.optimizer.name = "muon_8bit"
  config.optimizer.learning_rate = 3e-3
  return config


CONFIGS = {"quick": quick_config, "full": full_config,
           "train": train_config}


def get_config(name: str = "quick") -> ml_collections.ConfigDict:
  """A named config, for ``--config=PATH_OF_THIS_FILE:NAME``.

  Args:
    name: ``quick``, ``full`` or ``train``.

  Returns:
    The config.

  Raises:
    ValueError: an unknown name.
  """
  if name not in CONFIGS:
    raise ValueError(f"defaults.get_config: unknown config {name!r}; use "
                     f"one of {', '.join(CONFIGS)}.")
  return CONFIGS[name]()
