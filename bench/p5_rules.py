"""P5: where the time of a workflow run goes, from Snakemake's benchmark files (``benchmark:`` directives).

    python bench/p5_rules.py [RESULTS] [--wall SECONDS] [--out TABLE.md]

Reads ``RESULTS/benchmarks/**/*.tsv`` (``train/<run>/seed<S>.tsv``, ``evaluate/<kind>/<model>/seed<S>.tsv``,
``attack/<model>/seed<S>.tsv``; one row per job, columns ``s``, ``cpu_time``, ``max_rss``, ...) and prints one line
per job group (the path without the seed) and per rule (the first folder): jobs, total / mean / max wall seconds,
CPU seconds, peak RSS and share of the summed wall time. ``--wall`` is the measured duration of the whole run
(``time make run``): the table then also says how much of it no benchmarked job accounts for (analysis, report,
parameter table, Snakemake itself; with 2 cores, jobs running side by side make the sum exceed the wall time).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import common  # noqa: F401
import pandas as pd

from saccader.errors import UserError


def load(results: str | Path) -> pd.DataFrame:
    """One row per benchmark file: rule, group, seed, s, cpu_time, max_rss (MB)."""
    root = Path(results) / "benchmarks"
    files = sorted(root.rglob("*.tsv"))
    if not files:
        raise UserError(f"no benchmark files under {root}",
                        "run the workflow first (make run), or pass the results folder it wrote")
    rows = []
    for path in files:
        rel = path.relative_to(root).with_suffix("")
        frame = pd.read_csv(path, sep="\t")
        seed = re.fullmatch(r"seed(\d+)", rel.name)
        group = str(rel.parent if seed else rel)
        for _, r in frame.iterrows():  # a benchmark with repeat(...) has several rows
            rows.append({"rule": rel.parts[0], "group": group, "seed": int(seed[1]) if seed else -1,
                         "s": float(r["s"]), "cpu_time": float(pd.to_numeric(r.get("cpu_time"), errors="coerce")),
                         "max_rss": float(pd.to_numeric(r.get("max_rss"), errors="coerce"))})
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    out = frame.groupby(by).agg(jobs=("s", "size"), total_s=("s", "sum"), mean_s=("s", "mean"), max_s=("s", "max"),
                                cpu_s=("cpu_time", "sum"), max_rss_mb=("max_rss", "max"))
    out["share"] = out["total_s"] / out["total_s"].sum()
    return out.sort_values("total_s", ascending=False)


def markdown(frame: pd.DataFrame, wall: float | None = None) -> str:
    """The per-rule and per-group tables as Markdown (hand-written: no tabulate dependency for two tables)."""
    def md(t: pd.DataFrame, key: str) -> list[str]:
        cols = ["jobs", "total_s", "mean_s", "max_s", "cpu_s", "max_rss_mb", "share"]
        lines = [f"| {key} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for name, r in t.iterrows():
            cells = [f"{int(r['jobs'])}", *(f"{r[c]:.1f}" for c in cols[1:6]), f"{100 * r['share']:.1f} %"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines

    total = frame["s"].sum()
    lines = [f"Benchmarked jobs: {len(frame)}, summed wall time {total:.0f} s ({total / 60:.1f} min), "
             f"CPU {frame['cpu_time'].sum():.0f} s."]
    if wall:
        lines.append(f"Whole run: {wall:.0f} s ({wall / 60:.1f} min); summed job time / wall = {total / wall:.2f} "
                     f"(> 1: jobs ran in parallel; the rest is unbenchmarked rules and Snakemake itself).")
    lines += ["", *md(table(frame, "rule"), "rule"), "", *md(table(frame, "group"), "job group")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", default="results/embedded",
                   help="results folder (default: results/embedded)")
    p.add_argument("--wall", type=float, default=None, help="wall seconds of the whole run, for the remainder")
    p.add_argument("--out", default=None, help="also write the Markdown tables here")
    args = p.parse_args(argv)
    try:
        text = markdown(load(args.results), args.wall)
    except UserError as exc:
        print(f"error: {exc}")
        return 2
    print(text, end="")
    if args.out:
        from saccader.pipeline.io import write_text

        write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
