"""Cost of starting one local job: a fresh interpreter (submitit's default) vs forked from the warm-start server.

    python bench/warmstart.py [--jobs 5] [--commands train evaluate attack] [--out FILE.json]

Each job is what a Snakemake rule runs, ``python -m saccader.pipeline.launch --folder F -- <command> --help``: the
launcher, submitit's local controller, then the job, which imports what that subcommand imports (torch, torchvision,
timm,
pandas, the project's modules) and exits. So the time is all start-up, the part of every embedded job that does no
work. The two modes alternate job by job; the server is started (and timed) before the first warm job. Figures per
subcommand: median seconds a job, fresh and warm, and fresh / warm (> 1: warm start saves that factor).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import common  # noqa: F401

from common import ROOT, report


def launch(folder: str, warm: bool, command: str) -> float:
    """Seconds of one launched job (raises if it fails)."""
    cmd = [sys.executable, "-m", "saccader.pipeline.launch", "--folder", folder,
           "--warm-start" if warm else "--no-warm-start", "--", command, "--help"]
    tick = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - tick


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5, help="jobs per mode and subcommand")
    parser.add_argument("--commands", nargs="+", default=["train", "evaluate", "attack"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-warmstart-") as folder:
        first = launch(folder, True, args.commands[0])  # starts the server: paid once per run of the workflow
        for command in args.commands:
            times = {True: [], False: []}
            for _ in range(args.jobs):
                for warm in (False, True):
                    times[warm].append(launch(folder, warm, command))
            fresh, warm = statistics.median(times[False]), statistics.median(times[True])
            rows.append({"command": command, "fresh_s": fresh, "warm_s": warm, "speedup": fresh / warm})
    rows.append({"command": "(first warm job, starting the server)", "warm_s": first})
    report("warmstart", rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
