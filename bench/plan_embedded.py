"""``saccader plan --cpu`` on this CPU against the wall times a real embedded run recorded.

    python bench/plan_embedded.py --benchmarks /path/to/results/benchmarks [--out F.json]

Plans ``config/embedded.yaml`` for this CPU (``saccader.pipeline.plan.measure.measure_cpu``: for every training run, a few
iterations of the training loop itself with its data loading, its ``evaluate`` pass, a ``checkpoint.save`` and the start of a
job's processes, all measured now in CPU seconds, i.e. for a job with a core to itself; nothing is taken from the
run being predicted) and compares each training job's
projected seconds with the ``s`` (wall) column of its Snakemake benchmark file, and, where the run's
``train_log.parquet`` files sit beside, the projected training loop with the loop seconds the job logged.
Reported: every job's ratios, the share within a factor 1.5, and the load average while measuring.
The recorded run and this measurement may share the machine with other work: both are then noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import common  # noqa: F401

from common import ROOT, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", required=True, help="results/benchmarks of a finished embedded run")
    parser.add_argument("--config", default="config/embedded.yaml")
    parser.add_argument("--results", default=None, help="where the plan and its cache go (default: a temp folder)")
    parser.add_argument("--job-cpu", default=None,
                        help="bench/job_cpu.py's samples of the same run: CPU seconds of each job, set against the plan")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    from saccader.pipeline.plan import measure, report
    from saccader.pipeline.config import load_experiment

    torch.set_num_threads(1)  # as every local job runs (cpus_per_task 1)
    config = load_experiment(ROOT / args.config)
    config["results_dir"] = args.results or tempfile.mkdtemp(prefix="plan-embedded-")
    load_before, cpu, wall = os.getloadavg()[0], time.process_time(), time.perf_counter()
    settings = measure.measure_cpu(config)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    result = report.plan(config, None, settings, Path(config["results_dir"]) / ".plan_cache.json")
    rows = report.compare_benchmarks(result, Path(args.benchmarks))
    for row in rows:
        row.update({f"{k}_s": v for k, v in next(j["parts"] for j in result["jobs"]
                                                  if j["name"] == f"train/{row['run']}").items()})
    samples = json.loads(Path(args.job_cpu).read_text()) if args.job_cpu else {}
    for row in rows:  # the job's own process (a fork of the warm-start server), launcher and client left out
        sampled = samples.get(f"train/{row['run']}/{row['seed']}")
        if sampled:
            row.update({"job_cpu_s": sampled["cpu_s"], "core_share": sampled["cpu_s"] / row["wall_s"],
                        "projected/cpu": row["projected_s"] / sampled["cpu_s"]})
    within = [r for r in rows if 1 / 1.5 <= r["projected/wall"] <= 1.5]
    cpu_rows = [r for r in rows if "projected/cpu" in r]
    loops = [r for r in rows if "projected/loop" in r]
    summary = {"summary": f"{len(within)} of {len(rows)} within 1.5x",
               "loop_within_1.5x": f"{sum(1 / 1.5 <= r['projected/loop'] <= 1.5 for r in loops)} of {len(loops)}",
               "cpu_within_1.5x": f"{sum(1 / 1.5 <= r['projected/cpu'] <= 1.5 for r in cpu_rows)} of {len(cpu_rows)}",
               "start_s": settings.cpu_start_s, "measure_cpu_s": cpu, "measure_wall_s": wall,
               "load_average_1min": [load_before, os.getloadavg()[0]],
               "runs": {run: {k: m[k] for k in ("precision", "batch", "step_s", "step_wall_s", "flops_per_s")}
                        for run, m in settings.cpu_runs.items()}}
    report("plan_embedded", rows + [summary], args.out)


if __name__ == "__main__":
    main()
