"""Glimpse pictures from the evaluation job's saved examples: Fig 4 (policies compared) and Fig Supp.1 (Saccader).

Reads ``eval/glimpses/<model>/seed<S>.parquet.examples.npz``: images uint8 (N,H,W,3), labels (N,), and per policy
boxes_<policy> (N,T,4) as y0,x0,y1,x1 pixel boxes (end exclusive) and pred_<policy> (N,). Every file holds the same
image indices, so the panels of one column show the same image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis import common
from saccader import catalog
from saccader.errors import UserError

EXAMPLES = [catalog.RESULTS["examples"]]
# Figure 4 rows (a)-(d): the paper's four policies, each from the examples of the run it steers.
FIG4_POLICIES = ("saccader", "dram", "ordered_logits", "random")


def load_examples(results_dir, model: str, policy: str, seed: int | None = None) -> dict:
    """Images, labels, boxes and predictions of ``policy`` from ``model``'s examples (lowest seed by default)."""
    files = common.paths(results_dir, [f"eval/glimpses/{model}/seed*.parquet.examples.npz"])
    if seed is not None:
        files = [f for f in files if Path(f).name == f"seed{seed}.parquet.examples.npz"]
    if not files:
        raise UserError(f"no glimpse examples for model {model} under {results_dir}",
                        f"run the glimpses evaluation of {model} (it writes seed<S>.parquet.examples.npz)")
    files.sort(key=lambda f: int(Path(f).name.split(".")[0][4:]))
    with np.load(files[0]) as data:
        if f"boxes_{policy}" not in data:
            raise UserError(f"{files[0]} has no boxes_{policy}", f"rerun the glimpses evaluation of {model}")
        return {"images": data["images"], "labels": data["labels"], "boxes": data[f"boxes_{policy}"],
                "pred": data[f"pred_{policy}"], "file": files[0]}


def draw_glimpses(ax, image, boxes, colour, pred: int, label: int):
    """One picture: the image, each glimpse box outlined and numbered in visiting order; the title is the
    prediction, green when correct and red when wrong (Fig 4 caption)."""
    from matplotlib.patches import Rectangle

    ax.imshow(image, interpolation="nearest")
    for t, (y0, x0, y1, x1) in enumerate(boxes):
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                               linewidth=1.2))
        ax.text(x0 + 1, y0 + 1, str(t + 1), color="white", fontsize=5, va="top", ha="left",
                bbox={"facecolor": colour, "pad": 0.5, "linewidth": 0})
    ax.set_title(f"pred {int(pred)} / true {int(label)}", fontsize=6, color="green" if pred == label else "red")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_fig4(results_dir, train_glimpses: int | None = None, n_images: int = 6, config=None):
    """Figure 4: glimpses of (a) Saccader, (b) DRAM, (c) ordered logits and (d) random policy (BagNet-77-lowD) on
    the same images, at the training T (or the most glimpses saved, if fewer)."""
    from matplotlib.figure import Figure

    train_t = common.train_glimpses(results_dir, train_glimpses, config)
    runs = {name: entry.run for name, entry in catalog.policies().items()}
    rows = [(runs[p], p, load_examples(results_dir, runs[p], p)) for p in FIG4_POLICIES]
    n = min(n_images, *(len(r[2]["labels"]) for r in rows))
    colours = common.palette()
    fig = Figure(figsize=(1.3 * n + 0.8, 1.45 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (model, policy, ex) in enumerate(rows):
        for i in range(n):
            draw_glimpses(axes[r][i], ex["images"][i], ex["boxes"][i][:train_t], colours[policy], ex["pred"][i],
                          ex["labels"][i])
        axes[r][0].set_ylabel(f"({'abcd'[r]}) {common.label(policy)}", fontsize=6)
    return fig


def plot_fig_supp1(results_dir, train_glimpses: int | None = None, n_images: int = 24, ncols: int = 8,
                   config=None):
    """Figure Supp.1: more examples of the Saccader model's glimpses (at the training T)."""
    from matplotlib.figure import Figure

    train_t = common.train_glimpses(results_dir, train_glimpses, config)
    ex = load_examples(results_dir, "saccader", "saccader")
    n = min(n_images, len(ex["labels"]))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(1.3 * min(n, ncols), 1.45 * nrows), layout="constrained")
    axes = fig.subplots(nrows, min(n, ncols), squeeze=False).ravel()
    colour = common.palette()["saccader"]
    for i, ax in enumerate(axes):
        if i < n:
            draw_glimpses(ax, ex["images"][i], ex["boxes"][i][:train_t], colour, ex["pred"][i], ex["labels"][i])
        else:
            ax.set_axis_off()
    return fig


def fig4(results_dir, out_dir, **options):
    """Target: draw with ``plot_fig4`` and write figures/fig4.png and .pdf."""
    return common.save_figure(plot_fig4(results_dir, **options), out_dir, "fig4")


def fig_supp1(results_dir, out_dir, **options):
    """Target: draw with ``plot_fig_supp1`` and write figures/fig_supp1.png and .pdf."""
    return common.save_figure(plot_fig_supp1(results_dir, **options), out_dir, "fig_supp1")
