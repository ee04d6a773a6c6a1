"""End to end: the real evaluation and attack jobs on tiny untrained models, then every analysis target.

Catches any drift between what ``saccader evaluate`` / ``saccader attack`` write and what ``analysis/`` reads
(file layout, policy/model naming, resolutions, the examples npz). Untrained models, so no verdict is checked.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import analysis
from saccader import catalog
from test_analysis import write_train_logs
from test_evaluate import tiny_setup  # noqa: F401  (fixture: tiny dataset, config and checkpoints of every run)

pytestmark = pytest.mark.slow


def test_every_target_from_real_job_outputs(tiny_setup, tmp_path):  # noqa: F811
    from saccader.pipeline.attack import attack
    from saccader import models
    from saccader.pipeline import evaluate

    torch.set_num_threads(1)
    config, ckpts, root = tiny_setup
    config["train"].update({"saccader_no_attention": {"model": "saccader_no_attention"},
                            "nasnet": {"model": "nasnet_a_large"}, "bagnet77": {"model": "bagnet77"}})
    config["models"]["saccader_no_attention"] = dict(config["models"]["saccader"])
    config["models"]["bagnet77"] = {k: v for k, v in config["models"]["bagnet77_lowd"].items() if k != "lowd_dim"}
    for run, name in (("saccader_no_attention", "saccader_no_attention"), ("nasnet", "nasnet_a_large"),
                      ("bagnet77", "bagnet77")):
        (root / run).mkdir(exist_ok=True)
        torch.save(models.from_config(name, config).state_dict(), root / run / "model.pt")
        ckpts[run] = root / run
    res = tmp_path / "results"
    for seed in (0, 1):
        for kind, names in catalog.EVALUATIONS.items():
            for name in names:
                evaluate.evaluate(config, kind, name, seed, ckpts, res / f"eval/{kind}/{name}/seed{seed}.parquet")
        for name in ("saccader", "dram", "resnet_v2_50", "bagnet77_lowd"):
            attack(config, name, seed, ckpts, res / f"attack/{name}/seed{seed}.parquet")
    pd.DataFrame({"model": ["saccader"], "paper": [35583913], "reproduced": [35583913], "difference": [0],
                  "note": [""]}).to_parquet(res / "params.parquet")
    write_train_logs(res)
    written = analysis.run("all", res, res, train_glimpses=config["evaluate"]["train_glimpses"])
    expected = {res / o for t in catalog.TARGETS.values() for o in t.outputs}
    assert expected <= set(written) and all(p.stat().st_size > 0 for p in expected)
    claims = pd.read_csv(res / "claims.csv")
    assert len(claims) == 9 and set(claims["verdict"]) <= {"holds", "refuted", "undecided"}
    page = (res / "index.html").read_text()
    assert "(not built)" not in page
