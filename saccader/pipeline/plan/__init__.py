"""``saccader plan``: what every job of an experiment needs and costs, before it is submitted.

    saccader plan --config config.yaml [--profile slurm] [--gpu H100-80GB-SXM] [--mfu 0.3]

For every job of the config's DAG (the jobs come from the functions the workflow uses:
``saccader.pipeline.config.init_runs``, ``saccader.catalog.EVALUATIONS`` / ``required_runs``,
``saccader.catalog.ATTACKS`` / ``attacked_runs``):

- FLOPs per image of the forward and of a training step, counted with ``torch.utils.flop_counter``'s formulas on
  the real model at its real resolution, built on the meta device and run on fake tensors (``FakeTensorMode``:
  shapes only, no compute), so that NASNet-A Large at 331 costs no real arithmetic. torch's formula for the weight
  gradient of a grouped convolution ignores the groups (it counts a depthwise convolution's weight gradient C times
  over); ``_conv_backward_flop`` counts it right.
- Parameter, gradient, optimizer (SGD momentum) and EMA bytes; activation memory per training image at the recipe's
  precision (bf16 autocast where the recipe asks): the peak bytes of the tensors alive during a training step's
  forward and backward on fake tensors, as the slope between two batch sizes, both read off one pass (``Counter``);
  the bf16 weight copies are the bytes autograd saves that do not grow with the batch (saved-tensor hooks).
  Validated against torch's measured live memory in real CPU training steps (bench/plan_memory.py,
  tests/test_plan_counting.py).
- Attack jobs: model queries per image (clean, PGD steps with an input gradient, SPSA samples x iterations).
- The micro-batch that fits the GPU (``GPUS`` or the profile's ``gpu_name``), the accumulation steps, wall time and
  GPU-hours from a throughput model (``mfu`` x the GPU's dense peak), replaced by measured images/s of
  ``results/benchmarks/gpu_train.json`` (bench/gpu_train.py) where present.
- The input pipeline: images/s each training job needs per GPU against the measured images/s per CPU core of the
  Appendix C transform on ImageNet-sized JPEGs, times the workers a task has.
- Checks against the SLURM profile (time with requeues, GPU and host memory, GPUs) with one line and fix per
  problem, and GPU-hours of ``all`` and of each analysis target.

Writes ``<results_dir>/plan.md`` and ``plan.json``; counts are cached in ``<results_dir>/.plan_cache.json`` keyed by
what decides them (models section, recipe, dataset sizes, torch version). Imports nothing that needs a GPU.

One module per job: ``counting`` (FLOPs and bytes on fake tensors, the torch-private part), ``jobs`` (the DAG's
jobs, the count cache and its process pool), ``fit`` (GPUs, profile, micro-batch, time and memory checks),
``measure`` (transform speed, ``--cpu``), ``report`` (the plan, totals, plan.md / plan.json); this file is the
command.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from saccader.pipeline.config import add_config_argument, load
from saccader.pipeline.plan.fit import GPUS, MFU, Settings, gpu_spec
from saccader.pipeline.plan.measure import measure_cpu
from saccader.pipeline.plan.report import format_table, plan, write

log = logging.getLogger("saccader.pipeline.plan")

def _run(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    config = load(args.config)
    if args.results:
        config["results_dir"] = args.results
    results_dir = Path(config["results_dir"])
    settings = Settings(gpu=args.gpu, mfu=args.mfu)
    if args.gpu:
        gpu_spec(args.gpu)
    if args.cpu:
        settings = measure_cpu(config)
        log.info("this CPU: %s (median achieved by the training steps), %.1f s to start a job",
                 {k: f"{v / 1e9:.1f} GFLOP/s" for k, v in settings.cpu_rates.items()}, settings.cpu_start_s)
    tick = time.perf_counter()
    result = plan(config, args.profile, settings, results_dir / ".plan_cache.json",
                  source=" + ".join(map(str, args.config)))
    paths = write(result, results_dir)
    print(format_table(result))
    t = result["totals"]
    print(f"\nall: {t['all']['gpu_hours']:.0f} GPU-hours over {t['all']['jobs']} jobs; "
          + ", ".join(f"{n} {v['gpu_hours']:.0f}" for n, v in t["targets"].items()))
    for p in result["problems"]:
        print(f"problem: {p}")
    for a in result["assumptions"]:
        print(f"assumed: {a}")
    log.info("plan written to %s and %s in %.1f s", *paths, time.perf_counter() - tick)
    return 0


def register(subparsers) -> None:
    from saccader.pipeline.cli_types import integer, number

    p = subparsers.add_parser("plan", help="what every job needs and costs: FLOPs, memory, micro-batch, GPU-hours",
                              description=__doc__.splitlines()[0])
    add_config_argument(p)
    p.add_argument("--profile", default=None, help="Snakemake profile whose set-resources to check (e.g. slurm)")
    p.add_argument("--gpu", default=None, help=f"GPU to plan for, overriding the profile's gpu_name: {', '.join(GPUS)}")
    p.add_argument("--mfu", type=number(0, 1, low_open=True), default=MFU,
                   help="assumed model-FLOPs utilisation (default %(default)s)")
    p.add_argument("--results", default=None, help="results folder (default: the config's results_dir)")
    p.add_argument("--cpu", action="store_true",
                   help="plan for this CPU instead of GPUs: each training job's loop iteration, dev pass, "
                        "checkpoint and start measured now (a few real steps per run)")
    p.add_argument("--threads", type=integer(1), default=1, help="torch threads (default 1)")
    p.set_defaults(func=_run)
