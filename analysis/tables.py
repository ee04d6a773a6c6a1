"""Tables: Table Supp.1 (parameters), Table Supp.6 (clean / SPSA / PGD accuracy) and the summary at the paper's T.

Each table puts the paper's number (ImageNet) beside the reproduced one, and every column header names the dataset
its number comes from, so the two are never mixed silently.
"""

from __future__ import annotations

import pandas as pd

from analysis import common
from saccader import catalog
from analysis.glimpses import FULL_IMAGE, GLIMPSES, NASNET

ATTACK = [catalog.RESULTS["attack"]]
PARAMS = [catalog.RESULTS["params"]]
PAPER = "ImageNet"
# Table Supp.6 (eps = 2/255, 3906 ImageNet validation images): clean, SPSA, PGD accuracy.
PAPER_SUPP6 = {"saccader": (0.701, 0.003, 0.002), "dram": (0.666, 0.052, 0.009),
               "resnet_v2_50": (0.767, 0.001, 0.000), "bagnet77_lowd": (0.720, 0.006, 0.055)}
# Section 4.3: Saccader-NASNet at 331, 6 glimpses: (mean, SD) of top-1, top-5 and area covered.
PAPER_NASNET_331 = {"top1": (0.7503, 0.0008), "top5": (0.9119, 0.0022), "area": (0.2947, 0.0026)}


def table_supp1(results_dir, out_dir, train_glimpses: int | None = None, config=None):
    """Table Supp.1: number of parameters, the paper's count beside this code's, with the reason for any gap."""
    path = common.paths(results_dir, PARAMS)
    if not path:
        from saccader.errors import UserError
        raise UserError(f"no {results_dir}/params.parquet", "run `saccader params --out results/params.parquet`")
    params = pd.read_parquet(path[0])
    expected = {"model", "paper", "reproduced", "difference", "note"}
    if not expected <= set(params.columns):
        from saccader.errors import UserError
        raise UserError(f"{path[0]} lacks columns {sorted(expected - set(params.columns))}",
                        "regenerate it with `saccader params`")
    table = pd.DataFrame({
        "model": [common.label(m) for m in params["model"]],
        f"paper ({PAPER}, Table Supp.1)": [f"{int(v):,}" if pd.notna(v) else "" for v in params["paper"]],
        "reproduced (this code)": [f"{int(v):,}" for v in params["reproduced"]],
        "difference": [f"{int(v):+,}" if pd.notna(v) else "" for v in params["difference"]],
        "note": params["note"].fillna(""),
    })
    return common.save_table(table, out_dir, "table_supp1", numeric=params, title="Table Supp.1: parameters")


def table_supp6(results_dir, out_dir, train_glimpses: int | None = None, config=None):
    """Table Supp.6: clean, SPSA and PGD accuracy at eps = 2/255; paper (ImageNet) beside reproduced (mean ± SD
    over seeds) at this run's eps (the title names both when they differ)."""
    attack = common.load(results_dir, ATTACK, "Table Supp.6")
    dataset = common.one_dataset(attack, "Table Supp.6")
    summary = common.summarise(attack)
    rows, numeric = [], []
    models = [m for m in PAPER_SUPP6 if m in set(summary["model"])]
    models += sorted(set(summary["model"]) - set(models))
    for model in models:
        part = summary[summary["model"] == model].set_index("metric")
        row = {"model": common.label(model)}
        num = {"model": model, "dataset": dataset}
        for i, (metric, name) in enumerate((("clean_acc", "clean"), ("spsa_acc", "SPSA"), ("pgd_acc", "PGD"))):
            paper = PAPER_SUPP6.get(model, (None,) * 3)[i]
            row[f"{name}, paper ({PAPER})"] = "" if paper is None else f"{paper * 100:.1f}"
            mean, sd = (part.loc[metric, "mean"], part.loc[metric, "sd"]) if metric in part.index else (None, None)
            row[f"{name}, reproduced ({dataset})"] = common.pm(mean, sd)
            num.update({f"{metric}_paper": paper, f"{metric}_mean": mean, f"{metric}_sd": sd})
        row["seeds"] = num["n_seeds"] = int(part["n_seeds"].max())
        n_img = attack[attack["model"] == model]["n_images"]
        row["images"] = num["n_images"] = int(n_img.max())
        rows.append(row)
        numeric.append(num)
    return common.save_table(pd.DataFrame(rows), out_dir, "table_supp6", numeric=pd.DataFrame(numeric),
                             title=f"Table Supp.6: accuracy (%) under attack, paper at eps = 2/255, reproduced at "
                                   f"eps = {common.attack_eps(results_dir, config)}")


def summary_glimpses(available, train_t: int) -> int:
    """The paper's T = 6 when the run evaluated it, otherwise the run's training T (named in the table title)."""
    return common.PAPER_TRAIN_GLIMPSES if common.PAPER_TRAIN_GLIMPSES in set(available) else train_t


def _row_order(group) -> tuple:
    """Glimpse policies in legend order, then Saccader-NASNet, then the full-image references."""
    (experiment, model, policy, res, n), part = group
    trace = part["trace"].iloc[0]
    order = common.traces()
    rank = order.index(trace) if trace in order else len(order)
    return ("glimpses", "nasnet", "full_image").index(experiment), rank, model, res


def table_summary(results_dir, out_dir, train_glimpses: int | None = None, config=None):
    """Summary at the paper's T = 6: top-1, top-5 and area covered per model and policy (mean ± SD over seeds),
    the full-image references (T = 0), and the paper's Saccader-NASNet 331 result beside ours (Section 4.3)."""
    frames = [common.load(results_dir, GLIMPSES, "summary table")]
    frames += [common.load(results_dir, p, "summary table", required=False) for p in (NASNET, FULL_IMAGE)]
    df = pd.concat(frames, ignore_index=True)
    dataset = common.one_dataset(df, "summary table")
    train_t = common.train_glimpses(results_dir, train_glimpses, config)
    t = summary_glimpses(df.loc[df["experiment"] == "glimpses", "num_glimpses"], train_t)
    df = df[(df["num_glimpses"] == t) | (df["experiment"] == "full_image")]
    summary = common.summarise(df)
    nas_res = sorted(set(summary.loc[summary["experiment"] == "nasnet", "resolution"]))
    keys = ["experiment", "model", "policy", "resolution", "num_glimpses"]
    rows, numeric = [], []
    for (experiment, model, policy, res, n), part in sorted(summary.groupby(keys), key=_row_order):
        part = part.set_index("metric")
        high_res_nasnet = experiment == "nasnet" and len(nas_res) > 1 and res == nas_res[-1] and n == 6
        row = {"model": common.label(model), "policy": common.label(policy), "resolution": res, "T": n}
        num = {"dataset": dataset, "experiment": experiment, "model": model, "policy": policy, "resolution": res,
               "num_glimpses": n}
        for metric, name in (("top1", "top-1"), ("top5", "top-5"), ("area", "area")):
            paper = PAPER_NASNET_331[metric] if high_res_nasnet else (None, None)
            row[f"{name}, paper ({PAPER})"] = common.pm(*paper, digits=2)
            mean, sd = (part.loc[metric, "mean"], part.loc[metric, "sd"]) if metric in part.index else (None, None)
            row[f"{name}, reproduced ({dataset})"] = common.pm(mean, sd)
            num.update({f"{metric}_paper": paper[0], f"{metric}_paper_sd": paper[1], f"{metric}_mean": mean,
                        f"{metric}_sd": sd})
        row["seeds"] = num["n_seeds"] = int(part["n_seeds"].max())
        rows.append(row)
        numeric.append(num)
    title = f"Summary at T = {t} glimpses (%; full-image models at T = 0)"
    return common.save_table(pd.DataFrame(rows), out_dir, "table_summary", numeric=pd.DataFrame(numeric), title=title)
