"""``saccader plan`` on this CPU against the wall times a real embedded run recorded.

    python bench/plan_embedded.py --benchmarks /path/to/results/benchmarks [--out F.json]

Plans ``config/embedded.yaml`` for this CPU (``saccader.pipeline.plan.measure_cpu``: FLOP rates and a per-kernel
overhead solved from real training steps measured now) and compares each training job's projected seconds with the ``s``
(wall) column of its Snakemake benchmark file. Reported: every job's ratio, and the share within a factor 1.5.
The recorded run and this measurement share a 2-core machine with other work: both are noisy.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import common  # noqa: F401

from common import ROOT, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", required=True, help="results/benchmarks of a finished embedded run")
    parser.add_argument("--config", default="config/embedded.yaml")
    parser.add_argument("--results", default=None, help="where the plan and its cache go (default: a temp folder)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    from saccader.pipeline import plan
    from saccader.pipeline.config import load_experiment

    torch.set_num_threads(1)
    config = load_experiment(ROOT / args.config)
    config["results_dir"] = args.results or tempfile.mkdtemp(prefix="plan-embedded-")
    settings = plan.measure_cpu(config)
    rates = settings.cpu_rates
    result = plan.plan(config, None, settings, Path(config["results_dir"]) / ".plan_cache.json")
    rows = plan.compare_benchmarks(result, Path(args.benchmarks))
    within = [r for r in rows if 1 / 1.5 <= r["projected/wall"] <= 1.5]
    rows.append({"summary": f"{len(within)} of {len(rows)} within 1.5x",
                 "rate_fp32_gflops": rates["fp32"] / 1e9, "rate_bf16_gflops": rates["bf16"] / 1e9,
                 "us_per_kernel": settings.op_seconds * 1e6})
    report("plan_embedded", rows, args.out)


if __name__ == "__main__":
    main()
