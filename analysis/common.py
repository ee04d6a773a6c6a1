"""Shared helpers for ``analysis/``: read the tidy parquet, aggregate over seeds, one colour per policy, write outputs.

Only pandas/numpy at import time; matplotlib and seaborn are imported inside the drawing helpers so that
``import analysis`` (each analysis job) stays cheap. Names, labels and the order of the traces come from the
experiment catalog (``saccader.catalog``, torch-free): a figure draws every trace of its data in that order.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pandas as pd

from saccader import catalog

from saccader.pipeline import results
from saccader.errors import UserError
from saccader.pipeline.io import atomic_path, write_text

# The paper's training T (Section 3.2, Table Supp.5): the dotted line of Fig 3 and the T of the summary table.
PAPER_EPS_255 = 2  # Appendix D
PAPER_TRAIN_GLIMPSES = 6

# Runs whose policy is the Saccader's but whose curve is their own (Fig Supp.3), left out of Figs 3 and 5.
ABLATIONS = tuple(catalog.ablations())
FULL_IMAGE_MARKERS = catalog.FULL_IMAGE
GROUP = ["experiment", "dataset", "model", "policy", "resolution", "num_glimpses", "metric"]


def traces(frame: pd.DataFrame | None = None, exclude=()) -> list[str]:
    """The traces of ``frame`` (its ``trace`` column; all the catalog's without one) in the catalog's order =
    legend order = colour order, less ``exclude``."""
    present = None if frame is None else set(frame["trace"])
    return [t for t in catalog.traces() if (present is None or t in present) and t not in exclude]


def palette() -> dict[str, tuple]:
    """Trace -> RGB colour, the same in every figure (seaborn's colour-blind palette, in the catalog's order)."""
    import seaborn as sns

    names = catalog.traces()
    return dict(zip(names, sns.color_palette("colorblind", len(names))))


def trace(model: str, policy: str) -> str:
    """The curve a row belongs to: its policy, except the Saccader ablations, which are their own curves."""
    return model if model in ABLATIONS else policy


def label(name: str) -> str:
    return catalog.label(name)


def paths(results_dir, patterns) -> list[str]:
    """Files under ``results_dir`` matching glob ``patterns`` (relative to it), sorted."""
    found = []
    for pattern in patterns:
        found += glob.glob(os.path.join(os.fspath(results_dir), pattern))
    return sorted(set(found))


def load(results_dir, patterns, what: str, required: bool = True) -> pd.DataFrame:
    """Read and validate the parquet files matching ``patterns``; a missing input is a one-line ``UserError``."""
    files = [p for p in paths(results_dir, patterns) if p.endswith(".parquet")]
    if not files and required:
        raise UserError(f"no results for {what} under {results_dir} (looked for {', '.join(patterns)})",
                        "run the evaluation jobs first (snakemake ... all) or pass --results DIR")
    return results.load(files)


def one_dataset(df: pd.DataFrame, what: str) -> str:
    """The dataset the rows come from; refuse to mix datasets in one figure or table."""
    names = sorted(set(df["dataset"]))
    if len(names) > 1:
        raise UserError(f"{what}: results mix datasets {names}", "keep one dataset per results folder")
    return names[0] if names else "none"


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD (ddof=1, over seeds) and number of seeds per measurement (Figs 3, 5, 6, Supp.2-3 error bars).

    The SD is across seeds only (the paper's "±SD computed from 5 random initialisations"); a measurement repeated
    within one seed is refused rather than averaged. With a single seed the SD is undefined (NaN); figures then draw
    a zero-length error bar and tables print no SD.
    """
    dup = df.duplicated(GROUP + ["seed"])
    if dup.any():
        first = df[dup].iloc[0]
        raise UserError(f"results hold the same measurement twice ({first['experiment']}, {first['model']}, "
                        f"{first['policy']}, seed {first['seed']}, T={first['num_glimpses']}, {first['metric']})",
                        "remove the duplicated or stale parquet file and rerun")
    out = df.groupby(GROUP, as_index=False)["value"].agg(mean="mean", sd="std", n_seeds="count")
    out["trace"] = [trace(m, p) for m, p in zip(out["model"], out["policy"])]
    return out


def run_setting(results_dir, section: str, key: str, default, config=None):
    """A value of the run's resolved config (the file ``config`` names: ``python -m analysis --config``, the
    workflow's copy its jobs read; else ``<results>/config.yaml`` that the workflow writes), or ``default`` without
    it."""
    path = Path(config) if config else Path(results_dir) / "config.yaml"
    if path.exists():
        import yaml

        value = (yaml.safe_load(path.read_text()) or {}).get(section, {}).get(key)
        if value is not None:
            return value
    return default


def train_glimpses(results_dir, override: int | None = None, config=None) -> int:
    """The run's training T: ``override``, else ``evaluate.train_glimpses`` of the run's config, else the paper's
    T = 6."""
    if override is not None:
        return int(override)
    return int(run_setting(results_dir, "evaluate", "train_glimpses", PAPER_TRAIN_GLIMPSES, config))


def num_classes(results_dir, config=None) -> int:
    """The run's number of real classes: ``dataset.num_classes`` (classifier outputs) less ``label_offset`` (the
    background output of the ImageNet config, 1001 - 1); ImageNet's 1,000 without a config."""
    outputs = run_setting(results_dir, "dataset", "num_classes", None, config)
    if outputs is None:
        return 1000
    return int(outputs) - int(run_setting(results_dir, "dataset", "label_offset", 0, config))


def attack_eps(results_dir, config=None) -> str:
    """The run's l-inf budget as text (``attack.eps_255`` of its config; the paper's 2/255 without one)."""
    return f"{run_setting(results_dir, 'attack', 'eps_255', PAPER_EPS_255, config):g}/255"


def new_figure(ncols: int, width: float = 4.0, height: float = 3.2):
    """A Figure with ``ncols`` panels, built without pyplot (no interactive backend, no global figure state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def style():
    """Seaborn style as a context manager, so plotting never changes global rcParams."""
    import seaborn as sns

    return sns.axes_style("whitegrid")


def errorbar(ax, frame: pd.DataFrame, x: str, color, label_: str, xerr: bool = False, **kw):
    """One curve with ±SD error bars (y from ``mean``/``sd``; x error from ``x_sd`` when ``xerr``).

    Drawn with matplotlib's ``errorbar`` on our own seed aggregate rather than seaborn's ``lineplot``: the SD is
    then computed in one place (``summarise``), shared by figures and tables, and readable back from the artists.
    """
    frame = frame.sort_values(x)
    y, ysd = frame["mean"], frame["sd"]
    kwargs = dict(color=color, label=label_, capsize=2, marker=kw.pop("marker", "o"), markersize=3, linewidth=1.2)
    kwargs.update(kw)
    return ax.errorbar(frame[x], y, yerr=ysd.fillna(0).to_numpy(),
                       xerr=frame["x_sd"].fillna(0).to_numpy() if xerr else None, **kwargs)


def legend(fig, ax):
    """One legend for the whole figure, below the panels: inside them it would hide curves, and at the upper right
    a long panel title runs under it."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3) or 1, fontsize=7,
               frameon=False)


def percent_axis(ax, which: str = "y"):
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if which == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0))


def save_figure(fig, out_dir, name: str) -> list[Path]:
    """Write ``figures/<name>.png`` and ``.pdf`` atomically (fixed metadata, so reruns give identical PDFs)."""
    written = []
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        path = Path(out_dir) / "figures" / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, metadata=meta)
        written.append(path)
    return written


def save_table(table: pd.DataFrame, out_dir, name: str, numeric: pd.DataFrame | None = None,
               title: str = "") -> list[Path]:
    """Write ``tables/<name>.csv`` (numbers, ``numeric`` if given) and ``.md``/``.html`` (formatted ``table``)."""
    base = Path(out_dir) / ("tables" if name != "claims" else "") / name
    csv = (numeric if numeric is not None else table).to_csv(index=False)
    md = (f"**{title}**\n\n" if title else "") + table.to_markdown(index=False, disable_numparse=True) + "\n"
    html = table.to_html(index=False, border=0, classes="table", na_rep="", escape=True)
    if title:
        html = f"<p><b>{title}</b></p>\n" + html
    out = []
    for ext, text in (("csv", csv), ("md", md), ("html", html)):
        path = base.with_suffix(f".{ext}")
        write_text(path, text)
        out.append(path)
    return out


def pm(mean, sd, n=None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± SD`` in percent; SD is omitted when undefined (one seed)."""
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return ""
    text = f"{mean * scale:.{digits}f}"
    if sd is not None and not (isinstance(sd, float) and np.isnan(sd)):
        text += f" ± {sd * scale:.{digits}f}"
    return text + (f" (n={n})" if n is not None else "")
