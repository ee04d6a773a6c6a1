"""Accuracy and area covered as a function of the number of glimpses: Fig 3a/3b, Fig 6 and Fig Supp.3."""

from __future__ import annotations

import pandas as pd

from analysis import common
from saccader import catalog

GLIMPSES = [catalog.RESULTS["glimpses"]]
FULL_IMAGE = [catalog.RESULTS["full_image"]]
NASNET = [catalog.RESULTS["nasnet"]]


def _glimpse_axis(ax, ts, train_t: int, extra_tick: bool = False):
    """Integer ticks on T; the dotted vertical line at the training T (Fig 3 caption)."""
    ticks = sorted(set(int(t) for t in ts))
    ax.axvline(train_t, color="0.3", linestyle=":", linewidth=1)
    if extra_tick:
        ticks = ticks + [max(ticks) + 1]
    ax.set_xticks(ticks, [str(t) for t in ticks[:-1]] + ["full"] if extra_tick else None)
    ax.set_xlabel("number of glimpses")


def _accuracy_axis(ax, metric: str, ts, train_t: int, suffix: str, prefix: str = ""):
    """Glimpse x-axis, percent y-axis, and 'top-1'/'top-5' in the y-label and title."""
    name = "top-1" if metric == "top1" else "top-5"
    _glimpse_axis(ax, ts, train_t)
    common.percent_axis(ax)
    ax.set_ylabel(f"{name} accuracy")
    ax.set_title(f"{prefix}{name} {suffix}")


def _traces(ax, summary: pd.DataFrame, metric: str, colours: dict, traces, linestyle="-", suffix=""):
    for name in traces:
        part = summary[(summary["trace"] == name) & (summary["metric"] == metric)]
        if len(part):
            common.errorbar(ax, part, "num_glimpses", colours[name], common.label(name) + suffix,
                            linestyle=linestyle)


def _full_image_markers(ax, full: pd.DataFrame, metric: str, x: float):
    """Black markers for the base networks without attention (Fig 3a), one marker shape per model."""
    part = full[full["metric"] == metric]
    offsets = [0.0] if len(part) < 2 else list(0.3 * (i / (len(part) - 1) - 0.5) for i in range(len(part)))
    for offset, (model, row) in zip(offsets, part.set_index("model").iterrows()):  # spread so markers don't hide
        ax.errorbar([x + offset], [row["mean"]], yerr=[0 if pd.isna(row["sd"]) else row["sd"]], color="black",
                    marker=common.FULL_IMAGE_MARKERS.get(model, "o"), linestyle="none", capsize=2, markersize=5,
                    label=f"{common.label(model)} (full image)")


def plot_fig3(results_dir, train_glimpses: int | None = None, config=None):
    """Figure 3: (a) top-1 and top-5 accuracy vs number of glimpses for every policy, dotted line at the training
    T, dashed line at chance, black markers for the full-image models; (b) fraction of the image area covered vs glimpses."""
    glimpses = common.load(results_dir, GLIMPSES, "Fig 3")
    full = common.load(results_dir, FULL_IMAGE, "Fig 3 full-image references", required=False)
    dataset = common.one_dataset(pd.concat([glimpses, full]), "Fig 3")
    train_t = common.train_glimpses(results_dir, train_glimpses, config)
    n_classes = common.num_classes(results_dir, config)
    summary = common.summarise(glimpses[~glimpses["model"].isin(common.ABLATIONS)])
    full_summary = common.summarise(full) if len(full) else full
    traces = common.traces(summary, exclude=common.ABLATIONS)
    colours = common.palette()
    with common.style():
        fig, axes = common.new_figure(3)
        x_full = summary["num_glimpses"].max() + 1
        for ax, metric, title in zip(axes, ("top1", "top5", "area"),
                                     ("(a) top-1 accuracy", "(a) top-5 accuracy", "(b) area covered")):
            _traces(ax, summary, metric, colours, traces)
            if metric != "area":  # guessing: k of the run's C classes (its config; ImageNet's 1,000 without one)
                k = 1 if metric == "top1" else 5
                ax.axhline(min(k, n_classes) / n_classes, color="0.5", linestyle="--", linewidth=0.8,
                           label=f"chance ({n_classes} classes)")
            has_full = metric != "area" and len(full_summary) > 0
            if has_full:
                _full_image_markers(ax, full_summary, metric, x_full)
            _glimpse_axis(ax, summary["num_glimpses"], train_t, extra_tick=has_full)
            common.percent_axis(ax)
            ax.set_title(f"{title} ({dataset})")
            ax.set_ylabel("fraction of image covered" if metric == "area" else "accuracy")
        common.legend(fig, axes[0])
        return fig


def plot_fig_supp3(results_dir, train_glimpses: int | None = None, config=None):
    """Figure Supp.3: Saccader vs Saccader without location pretraining vs without attention network (top-1, top-5
    vs glimpses)."""
    glimpses = common.load(results_dir, GLIMPSES, "Fig Supp.3")
    glimpses = glimpses[glimpses["model"].isin(("saccader",) + common.ABLATIONS)]
    if glimpses.empty:
        from saccader.errors import UserError
        raise UserError("Fig Supp.3: no rows for saccader / saccader_no_pretrain / saccader_no_attention",
                        "run the glimpses evaluation of those models")
    dataset = common.one_dataset(glimpses, "Fig Supp.3")
    train_t = common.train_glimpses(results_dir, train_glimpses, config)
    summary = common.summarise(glimpses)
    colours = common.palette()
    with common.style():
        fig, axes = common.new_figure(2)
        for ax, metric in zip(axes, ("top1", "top5")):
            _traces(ax, summary, metric, colours, ("saccader",) + common.ABLATIONS)
            _accuracy_axis(ax, metric, summary["num_glimpses"], train_t, f"({dataset})")
        common.legend(fig, axes[0])
        return fig


def plot_fig6(results_dir, train_glimpses: int | None = None, config=None):
    """Figure 6: Saccader-NASNet top-1 / top-5 vs glimpses at the base resolution (224) and the high resolution
    (331): solid line at the base, dashed at the high resolution, both in the Saccader policy's colour."""
    nas = common.load(results_dir, NASNET, "Fig 6")
    dataset = common.one_dataset(nas, "Fig 6")
    train_t = common.train_glimpses(results_dir, train_glimpses, config)
    summary = common.summarise(nas)
    summary["trace"] = "saccader"  # Saccader's locations, NASNet's classification: the Saccader policy colour
    colours = common.palette()
    resolutions = sorted(set(summary["resolution"]))
    with common.style():
        fig, axes = common.new_figure(2)
        for ax, metric in zip(axes, ("top1", "top5")):
            for i, res in enumerate(resolutions):
                part = summary[summary["resolution"] == res]
                _traces(ax, part, metric, colours, ("saccader",), linestyle="-" if i == 0 else "--",
                        suffix=f"-NASNet, {res}x{res}")
            _accuracy_axis(ax, metric, summary["num_glimpses"], train_t, f"({dataset})", "Saccader-NASNet ")
        common.legend(fig, axes[0])
        return fig


def fig3(results_dir, out_dir, **options):
    """Target: draw with ``plot_fig3`` and write figures/fig3.png and .pdf."""
    return common.save_figure(plot_fig3(results_dir, **options), out_dir, "fig3")


def fig_supp3(results_dir, out_dir, **options):
    """Target: draw with ``plot_fig_supp3`` and write figures/fig_supp3.png and .pdf."""
    return common.save_figure(plot_fig_supp3(results_dir, **options), out_dir, "fig_supp3")


def fig6(results_dir, out_dir, **options):
    """Target: draw with ``plot_fig6`` and write figures/fig6.png and .pdf."""
    return common.save_figure(plot_fig6(results_dir, **options), out_dir, "fig6")
