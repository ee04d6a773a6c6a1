"""The whole pipeline end to end on the CI smoke configuration: dataset -> every training run -> every evaluation
and attack -> figures, tables, claims, index page and Snakemake report. Slow (a few minutes): ``pytest -m slow``."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import smoke_snakemake as snakemake
from saccader.pipeline import results as sres

pytestmark = pytest.mark.slow


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
    from saccader import catalog

    for target in catalog.TARGETS.values():
        for out in target.outputs:
            assert (results / out).stat().st_size > 0, out
    claims = pd.read_csv(results / "claims.csv")
    assert len(claims) >= 7 and set(claims["verdict"]) <= {"holds", "refuted", "undecided", "not tested"}
    report = (results / "report.html").read_text(errors="replace")
    assert "fig3" in report
    assert not re.search(r"<(script|link|img)[^>]*(src|href)=\"https?://", report)  # self-contained


def test_rerun_is_a_no_op(smoke_run):
    _, _, path = smoke_run
    out = snakemake("all", "-n", "--configfile", str(path))
    assert "Nothing to be done" in out or "nothing to be done" in out.lower()
