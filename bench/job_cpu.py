"""CPU seconds of each local job of a running Snakemake run, sampled from /proc (read only).

    python bench/job_cpu.py --out job_cpu.json [--interval 1] [--until-idle 600]

Warm-started jobs (``executor.warm_start``) are forked from a server, not from the launcher, so neither the
launcher's ``getrusage`` line nor Snakemake's ``cpu_time`` counts them. This samples every
``saccader.pipeline.warmstart`` process once per ``interval``: its job (the submitit log its stdout goes to:
``.../submitit/<rule>/<run>/<seed>/``), CPU seconds (utime + stime) and age, and keeps the last sample of each.
Against the wall seconds of the same job it gives the share of a core the job had; ``bench/plan_embedded.py
--job-cpu`` sets the plan's CPU seconds against it.
Stops after ``until-idle`` seconds without a job.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def sample() -> dict:
    jobs = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"saccader.pipeline.warmstart" not in cmd or b"--serve" not in cmd:  # a job is a fork of the server
                continue
            target = os.readlink(f"/proc/{pid}/fd/1")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        match = re.search(r"submitit/(\w+)/(.+)/(seed\d+)/", target)
        if match:
            cpu = (int(stat[11]) + int(stat[12])) / TICK
            jobs[f"{match[1]}/{match[2]}/{match[3]}"] = {"pid": int(pid), "cpu_s": cpu}
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--until-idle", type=float, default=600.0)
    args = parser.parse_args()
    seen, idle_since = {}, time.monotonic()
    while time.monotonic() - idle_since < args.until_idle:
        now = sample()
        for job, row in now.items():
            first = seen.get(job, {}).get("first_seen", time.time())
            seen[job] = {**row, "first_seen": first, "last_seen": time.time()}
        if now:
            idle_since = time.monotonic()
        Path(args.out).write_text(json.dumps(seen, indent=1) + "\n")
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
