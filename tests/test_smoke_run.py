"""The whole pipeline end to end on the CI smoke configuration: dataset -> every training run -> every evaluation
and attack -> figures, tables, claims, index page and Snakemake report. Slow (a few minutes): ``pytest -m slow``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from saccader import results as sres
from saccader.config import load_experiment

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def snakemake(*args, cwd=REPO):
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    config = load_experiment(REPO / "config" / "smoke.yaml")
    config["results_dir"] = str(root / "results")
    config["dataset"]["root"] = str(root / "dataset")
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    snakemake("all", "--configfile", str(path))  # the target first: --configfile takes several values
    snakemake("--configfile", str(path), "--report", str(root / "results" / "report.html"))
    return config, root / "results", path


def test_every_policy_seed_and_glimpse_count_is_measured(smoke_run):
    config, results, _ = smoke_run
    df = sres.load(sorted((results / "eval" / "glimpses").rglob("seed*.parquet")))
    t_max = config["evaluate"]["max_glimpses"]
    expected = {("saccader", "saccader"), ("saccader_no_pretrain", "saccader"), ("saccader_no_attention", "saccader"),
                ("dram", "dram")} | {("bagnet77_lowd", p) for p in config["evaluate"]["policies"]}
    for (model, policy), part in df.groupby(["model", "policy"]):
        assert (model, policy) in expected
        for metric in ("top1", "top5", "area"):
            rows = part[part["metric"] == metric]
            assert set(zip(rows["seed"], rows["num_glimpses"])) == {
                (s, t) for s in config["seeds"] for t in range(1, t_max + 1)}, (model, policy, metric)
    assert {(m, p) for m, p in zip(df["model"], df["policy"])} == expected
    for kind in ("full_image", "occlusion", "nasnet"):
        assert sres.load(sorted((results / "eval" / kind).rglob("seed*.parquet"))).shape[0] > 0
    attacks = sres.load(sorted((results / "attack").rglob("seed*.parquet")))
    assert set(attacks["metric"]) == {"clean_acc", "pgd_acc", "spsa_acc"}


def test_figures_tables_claims_and_report_exist(smoke_run):
    _, results, _ = smoke_run
    import analysis

    for target in analysis.TARGETS.values():
        for out in target.outputs:
            assert (results / out).stat().st_size > 0, out
    claims = pd.read_csv(results / "claims.csv")
    assert len(claims) >= 7 and set(claims["verdict"]) <= {"holds", "does not hold", "not tested"}
    report = (results / "report.html").read_text(errors="replace")
    assert "fig3" in report
    assert not re.search(r"<(script|link|img)[^>]*(src|href)=\"https?://", report)  # self-contained


def test_rerun_is_a_no_op(smoke_run):
    _, _, path = smoke_run
    out = snakemake("all", "-n", "--configfile", str(path))
    assert "Nothing to be done" in out or "nothing to be done" in out.lower()
