"""Accuracy vs area covered and occlusion: Fig 5a/5b (top-1) and Fig Supp.2a/2b (top-5)."""

from __future__ import annotations

import pandas as pd

from analysis import common
from saccader import catalog
from analysis.glimpses import FULL_IMAGE, GLIMPSES

OCCLUSION = [catalog.RESULTS["occlusion"]]


def versus_area(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (trace, T): accuracy ``metric`` mean/SD beside the area covered mean/SD (``x_mean``/``x_sd``)."""
    keys = ["trace", "model", "policy", "resolution", "num_glimpses"]
    y = summary[summary["metric"] == metric][keys + ["mean", "sd", "n_seeds"]]
    x = summary[summary["metric"] == "area"][keys + ["mean", "sd"]].rename(columns={"mean": "x_mean", "sd": "x_sd"})
    return y.merge(x, on=keys, how="inner")


def _panel(ax, summary, metric, colours):
    table = versus_area(summary, metric)
    for name in common.traces(table):
        common.errorbar(ax, table[table["trace"] == name], "x_mean", colours[name], common.label(name), xerr=True)
    common.percent_axis(ax, "x")
    common.percent_axis(ax, "y")


def _draw(results_dir, k: int):
    """Panel (a): top-k of each policy vs the area its glimpses cover; panel (b): ResNet-v2-50 top-k with those
    glimpses occluded vs the area occluded, with the unoccluded ResNet-v2-50 (full image) as a black marker at 0."""
    what = "Fig 5" if k == 1 else "Fig Supp.2"
    glimpses = common.load(results_dir, GLIMPSES, what)
    occlusion = common.load(results_dir, OCCLUSION, f"{what}b")
    full = common.load(results_dir, FULL_IMAGE, f"{what}b reference", required=False)
    dataset = common.one_dataset(pd.concat([glimpses, occlusion, full]), what)
    colours = common.palette()
    used = common.summarise(glimpses[~glimpses["model"].isin(common.ABLATIONS)])
    occluded = common.summarise(occlusion.replace({"metric": {f"occluded_top{k}": f"top{k}"}}))
    with common.style():
        fig, axes = common.new_figure(2)
        _panel(axes[0], used, f"top{k}", colours)
        axes[0].set(xlabel="fraction of image covered by glimpses", ylabel=f"top-{k} accuracy",
                    title=f"(a) accuracy vs area covered ({dataset})")
        _panel(axes[1], occluded, f"top{k}", colours)
        resnet = full[(full["model"] == "resnet_v2_50") & (full["metric"] == f"top{k}")] if len(full) else full
        if len(resnet):
            s = common.summarise(resnet).iloc[0]
            axes[1].errorbar([0.0], [s["mean"]], yerr=[0 if pd.isna(s["sd"]) else s["sd"]], color="black",
                             marker="s", linestyle="none", capsize=2, label="ResNet-v2-50 (nothing occluded)")
        axes[1].set(xlabel="fraction of image occluded", ylabel=f"ResNet-v2-50 top-{k} accuracy",
                    title=f"(b) glimpses occluded ({dataset})")
        common.legend(fig, axes[1])
        return fig


def plot_fig5(results_dir, train_glimpses: int | None = None, config=None):
    """Figure 5: (a) top-1 accuracy vs area covered by glimpses; (b) ResNet-v2-50 top-1 with the glimpses of each
    policy occluded vs area occluded."""
    return _draw(results_dir, 1)


def plot_fig_supp2(results_dir, train_glimpses: int | None = None, config=None):
    """Figure Supp.2: as Figure 5 with top-5 accuracy."""
    return _draw(results_dir, 5)


def fig5(results_dir, out_dir, **options):
    """Target: draw with ``plot_fig5`` and write figures/fig5.png and .pdf."""
    return common.save_figure(plot_fig5(results_dir, **options), out_dir, "fig5")


def fig_supp2(results_dir, out_dir, **options):
    """Target: draw with ``plot_fig_supp2`` and write figures/fig_supp2.png and .pdf."""
    return common.save_figure(plot_fig_supp2(results_dir, **options), out_dir, "fig_supp2")
