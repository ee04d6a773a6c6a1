"""P4: workflow overheads -- paper-scale dry-run, no-op rerun of the embedded ``all``, one figure from parquet.

    python bench/p4_workflow.py [--results results] [--out FILE.json]

Wall seconds of each command (a subprocess, as a user runs it; Python start-up included), minimum and median of
``--repeats`` interleaved runs:
    paper_dry_run_s     ``snakemake -n all`` with config.yaml (all models x 5 seeds) on a fake ImageNet tree of
                        1,000 classes (target <= 5 s)
    embedded_noop_s     ``snakemake --configfile config/embedded.yaml --cores 2 all`` when nothing is left to do
                        (target <= 5 s); while jobs are pending, only the dry-run is timed and the pending job count
                        is reported instead
    figure_s            ``python -m analysis fig3`` from the results' parquet, or from hand-made parquet
                        (``tests/test_analysis.make_results``) when no evaluation has run yet (target <= 10 s)
    snakemake_start_s   ``snakemake --version``: the floor every Snakemake call pays
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401
from common import ROOT, report

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def timed(cmd: list[str], check: bool = True) -> tuple[float, str]:
    tick = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - tick
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return seconds, out


def fake_imagenet(root: Path, classes: int = 1000) -> Path:
    """ImageNet's layout, one tiny JPEG per class and split (the DAG only lists folders)."""
    from PIL import Image

    image = Image.new("RGB", (8, 8), (120, 60, 30))
    for c in range(classes):
        for split in ("train", "val"):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"n{c:08d}_{split}.JPEG")
    return root


def jobs(out: str) -> int:
    """Total of a dry-run's job table (0 when there is nothing to be done)."""
    m = re.search(r"^total\s+(\d+)$", out, re.MULTILINE)
    return int(m[1]) if m else 0


def paper_dry_run(tmp: Path) -> tuple[float, int]:
    root = fake_imagenet(tmp / "imagenet")
    seconds, out = timed([*SNAKEMAKE, "all", "-n", "--nolock", "--config", f"results_dir={tmp / 'res'}",
                          f"dataset={{root: {root}}}"])
    return seconds, jobs(out)


def embedded_noop(results: str) -> tuple[float, int, bool]:
    """(seconds, pending jobs, whether the seconds are a real no-op rerun or only the dry-run)."""
    base = [*SNAKEMAKE, "all", "--configfile", "config/embedded.yaml", "--config", f"results_dir={results}"]
    seconds, out = timed([*base, "-n", "--nolock"])
    pending = jobs(out)
    if pending:
        return seconds, pending, False
    seconds, out = timed([*base, "--cores", "2"])
    return seconds, jobs(out), True


def figure(results: Path, tmp: Path) -> tuple[float, str]:
    source = "results"
    if not list(results.glob("eval/glimpses/*/*.parquet")):
        sys.path.insert(0, str(ROOT / "tests"))
        from test_analysis import make_results

        results, source = make_results(tmp / "handmade"), "hand-made parquet"
    seconds, _ = timed([sys.executable, "-m", "analysis", "fig3", "--results", str(results), "--out",
                        str(tmp / "fig")])
    return seconds, source


def measure(results: str = "results/embedded", repeats: int = 3) -> dict:
    """Each command ``repeats`` times, interleaved; the minimum (the cost itself, without the neighbours' load) and
    the median are reported."""
    runs: dict[str, list[float]] = {"snakemake_start_s": [], "paper_dry_run_s": [], "embedded_s": [], "figure_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for _ in range(repeats):
            runs["snakemake_start_s"].append(timed([*SNAKEMAKE, "--version"])[0])
            seconds, paper_jobs = paper_dry_run(tmp)
            runs["paper_dry_run_s"].append(seconds)
            seconds, pending, real = embedded_noop(results)
            runs["embedded_s"].append(seconds)
            seconds, source = figure(ROOT / results, tmp)
            runs["figure_s"].append(seconds)
    row = {"repeats": repeats, "paper_jobs": paper_jobs, "embedded_pending_jobs": pending,
           "embedded_timed": "no-op rerun" if real else "dry-run only (jobs pending)", "figure_from": source}
    for key, values in runs.items():
        row[key + "_min"], row[key + "_median"] = min(values), statistics.median(values)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results/embedded", help="results_dir of the embedded run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    report("P4 workflow", [measure(args.results, args.repeats)], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
