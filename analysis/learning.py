"""Learning curves of every run and seed, and whether each reached a dev plateau (from the per-epoch training logs,
``runs/<run>/seed<S>/train_log.parquet``, that every training job writes).

A run has reached its plateau when its last epoch gained less than ``PLATEAU_POINTS`` points of dev top-1 over the
epoch before (a run measuring dev every few epochs: the gain between its last two measurements, per epoch). Logs where dev top-1 is measured at fewer than two epochs are judged on train top-1 (labelled so); a
run of one epoch cannot be judged ("one epoch").
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from analysis import common
from saccader import catalog

LOGS = [catalog.RESULTS["train_logs"]]
PLATEAU_POINTS = 1.0  # "the last epochs gain < 1 point" of top-1
PLATEAU, LEARNING, UNKNOWN = "plateau", "still learning", "one epoch"


def load_logs(results_dir) -> pd.DataFrame:
    """Every training log, with its run and seed taken from its path."""
    frames = []
    for path in common.paths(results_dir, LOGS):
        m = re.search(r"runs/([^/]+)/seed(\d+)/train_log\.parquet$", path)
        log = pd.read_parquet(path)
        if m and len(log):
            frames.append(log.assign(run=m.group(1), seed=int(m.group(2))))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plateau_status(log: pd.DataFrame, points: float = PLATEAU_POINTS) -> dict:
    """One run and seed: the metric judged (dev top-1 where measured at 2+ epochs, else train top-1), its last
    value, the last epoch's gain in points and the status."""
    log = log.sort_values("epoch").set_index("epoch")
    dev = log["dev_top1"].dropna() if "dev_top1" in log else pd.Series(dtype=float)
    metric, values = ("dev top-1", dev) if len(dev) >= 2 else ("train top-1", log.get("train_top1", dev).dropna())
    row = {"epochs": int(log.index.max()), "judged on": metric,
           "last": float(values.iloc[-1]) if len(values) else np.nan, "last gain (pts)": np.nan, "status": UNKNOWN}
    if len(values) >= 2:
        gain = 100 * (values.iloc[-1] - values.iloc[-2]) / (values.index[-1] - values.index[-2])
        row.update({"last gain (pts)": gain, "status": PLATEAU if gain < points else LEARNING})
    return row


def plateaus(logs: pd.DataFrame, points: float = PLATEAU_POINTS) -> pd.DataFrame:
    """One row per run and seed (see ``plateau_status``)."""
    if logs.empty:
        return pd.DataFrame(columns=["run", "seed", "epochs", "judged on", "last", "last gain (pts)", "status"])
    rows = [{"run": run, "seed": seed, **plateau_status(g, points)} for (run, seed), g in logs.groupby(["run", "seed"])]
    return pd.DataFrame(rows)


def table_plateau(results_dir, out_dir, train_glimpses: int | None = None, config=None):
    """Write ``tables/table_plateau``: per run and seed, whether training reached a plateau."""
    table = plateaus(load_logs(results_dir))
    if table.empty:
        from saccader.errors import UserError
        raise UserError(f"no training logs under {results_dir}/runs", "train the runs first (snakemake ... all)")
    shown = table.assign(**{"last": [common.pm(v, None) + " %" if pd.notna(v) else "" for v in table["last"]],
                            "last gain (pts)": [f"{v:+.1f}" if pd.notna(v) else "" for v in table["last gain (pts)"]]})
    title = (f"Training plateau: the last epoch gains < {PLATEAU_POINTS:g} point of top-1 "
             f"({(table['status'] == PLATEAU).sum()} of {len(table)} runs x seeds)")
    return common.save_table(shown, out_dir, "table_plateau", numeric=table, title=title)


def fig_learning(results_dir, out_dir, train_glimpses: int | None = None, config=None):
    """Write ``figures/fig_learning``: train (line) and dev (markers) top-1 per epoch, one panel per run, one colour
    per seed."""
    logs = load_logs(results_dir)
    if logs.empty:
        from saccader.errors import UserError
        raise UserError(f"no training logs under {results_dir}/runs", "train the runs first (snakemake ... all)")
    from matplotlib.figure import Figure
    import seaborn as sns

    runs = sorted(logs["run"].unique())
    cols = min(len(runs), 5)
    rows = -(-len(runs) // cols)
    colours = dict(zip(sorted(logs["seed"].unique()), sns.color_palette("colorblind", logs["seed"].nunique())))
    with common.style():
        fig = Figure(figsize=(3.0 * cols, 2.4 * rows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax, run in zip(axes, runs):
            for seed, g in logs[logs["run"] == run].groupby("seed"):
                g = g.sort_values("epoch")
                ax.plot(g["epoch"], g.get("train_top1", np.nan), color=colours[seed], linewidth=1,
                        label=f"seed {seed}")
                dev = g.dropna(subset=["dev_top1"]) if "dev_top1" in g else g.iloc[:0]
                ax.plot(dev["epoch"], dev["dev_top1"], "o", color=colours[seed], markersize=3)
            ax.set_title(run, fontsize=8)
            ax.set_xlabel("epoch", fontsize=7)
            ax.tick_params(labelsize=6)
            common.percent_axis(ax)
        for ax in axes[len(runs):]:
            ax.set_visible(False)
        common.legend(fig, axes[0])
        return common.save_figure(fig, out_dir, "fig_learning")
