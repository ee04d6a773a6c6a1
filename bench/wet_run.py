"""Wet run (``make wet-run``): wall time, CPU time and peak memory of every heavy job of a workflow run.

    python bench/wet_run.py [RESULTS] [--wall SECONDS]     (default RESULTS: results/mini-imagenet)

Reads the launcher's last line in each heavy job's log (``launch: job N done in W s; cpu C s, peak rss M MiB``:
exact ``getrusage`` figures of the local job's processes) and Snakemake's benchmark file of the same job, writes
``RESULTS/benchmarks/jobs.parquet`` (one row per job: job, rule, wall_s, cpu_s, peak_rss_mib, bench_s) and prints the
per-job table with the totals. On a shared machine the wall times stretch with the load; the CPU seconds do not, so
their sum over 2 is the least wall time the heavy jobs need on 2 idle cores.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import common  # noqa: F401
import pandas as pd

from saccader.errors import UserError

DONE = re.compile(r"launch: job \S+ done in ([\d.]+) s; cpu ([\d.]+) s, peak rss (\d+) MiB")


def jobs(results: str | Path) -> pd.DataFrame:
    """One row per heavy job whose launcher log holds the usage line."""
    results = Path(results)
    rows = []
    for log in sorted((results / "logs").rglob("*.log")):
        rel = log.relative_to(results / "logs")
        if rel.parts[0] in ("submitit", "analysis"):
            continue
        found = DONE.findall(log.read_text(errors="replace"))
        if not found:
            continue
        wall, cpu, rss = found[-1]
        job = str(rel.with_suffix(""))  # e.g. train/nasnet_331/seed0, check_data
        bench = results / "benchmarks" / rel.with_suffix(".tsv")
        bench_s = float(pd.read_csv(bench, sep="\t")["s"].iloc[-1]) if bench.is_file() else float("nan")
        rows.append({"job": job, "rule": Path(job).parts[0], "wall_s": float(wall), "cpu_s": float(cpu),
                     "peak_rss_mib": int(rss), "bench_s": bench_s})
    if not rows:
        raise UserError(f"no finished local jobs under {results / 'logs'}", "run `make wet-run` first")
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame, wall: float | None = None) -> str:
    lines = ["| job | wall s | cpu s | peak RSS MiB |", "|---|---|---|---|"]
    lines += [f"| {r.job} | {r.wall_s:.1f} | {r.cpu_s:.1f} | {r.peak_rss_mib} |" for r in frame.itertuples()]
    cpu = frame["cpu_s"].sum()
    lines += ["", f"{len(frame)} heavy jobs: summed wall {frame['wall_s'].sum():.0f} s, summed CPU {cpu:.0f} s "
                  f"({cpu / 60:.1f} min; on 2 idle cores at least {cpu / 120:.1f} min of wall), "
                  f"largest peak RSS {frame['peak_rss_mib'].max()} MiB ({frame.loc[frame['peak_rss_mib'].idxmax(), 'job']})"]
    if wall:
        lines.append(f"whole run: {wall:.0f} s ({wall / 60:.1f} min)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", default="results/mini-imagenet")
    p.add_argument("--wall", type=float, default=None, help="wall seconds of the whole run")
    args = p.parse_args(argv)
    try:
        frame = jobs(args.results)
    except UserError as exc:
        print(f"error: {exc}")
        return 2
    from saccader.pipeline.io import atomic_path

    with atomic_path(Path(args.results) / "benchmarks" / "jobs.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    print(markdown(frame, args.wall), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
