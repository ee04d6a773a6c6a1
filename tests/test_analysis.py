"""analysis/: every figure, table, the claims verdict and the index page, drawn from small hand-made parquet files.

The fixture writes three seeds whose values are ``base + (-d, 0, +d)``, so the SD over seeds (ddof=1) is exactly
``d``; tests read it back from the matplotlib error-bar artists.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis import claims as claims_mod
from analysis import common
from analysis.area import plot_fig5, plot_fig_supp2
from analysis.glimpses import plot_fig3, plot_fig6, plot_fig_supp3
from analysis.pictures import plot_fig4, plot_fig_supp1
from saccader import catalog
from saccader.pipeline import results
from saccader.errors import UserError

SEEDS = (0, 1, 2)
OFFSETS = (-1.0, 0.0, 1.0)
D = 0.01                       # SD over seeds of every top-1 value
T_MAX, TRAIN_T = 6, 3
ROOT = Path(__file__).resolve().parents[1]


def _curves(flip: bool):
    """(model, policy) -> T -> (top1, area); ``flip`` reverses every comparison the claims make."""
    ts = range(1, T_MAX + 1)
    sacc = {t: (0.30 - 0.01 * t if flip else 0.50 + 0.05 * t, 0.05 + 0.01 * t if flip else 0.10 * t) for t in ts}
    dram = {t: (0.40 + 0.03 * t if flip else 0.45 + 0.02 * min(t, TRAIN_T) - 0.02 * max(t - TRAIN_T, 0), 0.09 * t)
            for t in ts}
    return {
        ("saccader", "saccader"): sacc,
        ("saccader_no_pretrain", "saccader"): {t: ((0.6 if flip else 0.3) + 0.03 * t, 0.1 * t) for t in ts},
        ("saccader_no_attention", "saccader"): {t: ((0.6 if flip else 0.35) + 0.03 * t, 0.1 * t) for t in ts},
        ("bagnet77_lowd", "ordered_logits"): {t: (0.40 + 0.02 * t, 0.10 + 0.04 * (t - 1)) for t in ts},
        ("bagnet77_lowd", "random"): {t: (0.20 + 0.05 * t, 0.10 * t) for t in ts},
        ("bagnet77_lowd", "sobel_mean"): {t: (0.22 + 0.04 * t, 0.10 * t) for t in ts},
        ("bagnet77_lowd", "sobel_var"): {t: (0.21 + 0.04 * t, 0.10 * t) for t in ts},
        ("dram", "dram"): dram,
    }


def _save(path: Path, experiment: str, rows: list[dict], dataset: str = "digits"):
    base = dict(experiment=experiment, dataset=dataset, split="test", n_images=100, config_hash="abc",
                code_version="test")
    results.save(results.rows(base, rows), path)


def make_results(root: Path, flip: bool = False, dataset: str = "digits") -> Path:
    """A complete hand-made results folder: glimpses, full image, occlusion, NASNet, attacks, params, examples."""
    curves = _curves(flip)
    for seed, off in zip(SEEDS, OFFSETS):
        by_model: dict[str, list] = {}
        for (model, policy), curve in curves.items():
            for t, (top1, area) in curve.items():
                for metric, value in (("top1", top1), ("top5", top1 + 0.2), ("area", area)):
                    by_model.setdefault(model, []).append(dict(model=model, policy=policy, seed=seed,
                                                               resolution=64, num_glimpses=t, metric=metric,
                                                               value=value + off * D))
        for model, rows in by_model.items():
            _save(root / f"eval/glimpses/{model}/seed{seed}.parquet", "glimpses", rows, dataset)
        full = [dict(model=m, policy="full_image", seed=seed, resolution=64, num_glimpses=0, metric=k,
                     value=v + off * D) for m, acc in (("resnet_v2_50", 0.9), ("bagnet77_lowd", 0.85),
                                                       ("bagnet77", 0.88), ("nasnet", 0.92))
                for k, v in (("top1", acc), ("top5", min(acc + 0.05, 1.0)))]
        for m in ("resnet_v2_50", "bagnet77_lowd", "bagnet77", "nasnet"):
            _save(root / f"eval/full_image/{m}/seed{seed}.parquet", "full_image",
                  [r for r in full if r["model"] == m], dataset)
        occ = []
        for policy in ("saccader", "random", "ordered_logits", "sobel_mean", "sobel_var", "dram"):
            for t in range(1, T_MAX + 1):
                drop = {"saccader": 0.02 if flip else 0.10, "random": 0.05}.get(policy, 0.04)
                for metric, value in (("occluded_top1", 0.9 - drop * t), ("occluded_top5", 0.95 - drop * t),
                                      ("area", 0.1 * t)):
                    occ.append(dict(model="resnet_v2_50", policy=policy, seed=seed, resolution=64, num_glimpses=t,
                                    metric=metric, value=value + off * D))
        _save(root / f"eval/occlusion/resnet_v2_50/seed{seed}.parquet", "occlusion", occ, dataset)
        sacc = curves[("saccader", "saccader")]  # Saccader-NASNet above it, and above that at 95 (below if flip)
        step = -0.05 if flip else 0.05
        nas = [dict(model="saccader_nasnet", policy="saccader", seed=seed, resolution=res, num_glimpses=t, metric=k,
                    value=v + off * D)
               for res, gain in ((64, step), (95, 2 * step)) for t in range(1, T_MAX + 1)
               for k, v in (("top1", sacc[t][0] + gain), ("top5", sacc[t][0] + gain + 0.1), ("area", 0.05))]
        _save(root / f"eval/nasnet/saccader_nasnet/seed{seed}.parquet", "nasnet", nas, dataset)
        for model in ("saccader", "dram", "resnet_v2_50", "bagnet77_lowd"):
            pgd = 0.7 if (flip and model == "bagnet77_lowd") else 0.01
            rows = [dict(model=model, policy="full_image", seed=seed, resolution=64, num_glimpses=0, metric=k,
                         value=v + off * D) for k, v in (("clean_acc", 0.8), ("pgd_acc", pgd + D),
                                                         ("spsa_acc", 0.02))]
            _save(root / f"attack/{model}/seed{seed}.parquet", "robustness", rows, dataset)
        _examples(root, seed)
    pd.DataFrame({"model": ["bagnet77_lowd", "saccader"], "paper": [20628393, 35583913],
                  "reproduced": [20628393, 35583912], "difference": [0, -1],
                  "note": ["", "one bias fewer (test)"]}).to_parquet(root / "params.parquet")
    write_train_logs(root)
    return root


def write_train_logs(root: Path, runs=("saccader", "bagnet77_lowd")) -> None:
    """Per-epoch training logs of ``runs`` for every seed (the learning curves and the plateau table)."""
    for run in runs:
        for seed in SEEDS:
            folder = root / f"runs/{run}/seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"epoch": [1, 2, 3], "loss": [2.0, 1.5, 1.4], "train_top1": [0.3, 0.5, 0.55],
                          "dev_top1": [0.3, 0.52, 0.525 + 0.01 * seed]}).to_parquet(folder / "train_log.parquet")


def _examples(root: Path, seed: int, n: int = 3):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
    labels = np.array([1, 2, 3])
    box = np.array([[0, 0, 4, 4], [4, 4, 8, 8], [8, 8, 12, 12], [12, 12, 16, 16], [0, 8, 4, 12], [8, 0, 12, 4]])
    boxes = np.repeat(box[None], n, axis=0)
    files = {"saccader": ("saccader",), "dram": ("dram",), "bagnet77_lowd": ("ordered_logits", "random")}
    for model, policies in files.items():
        path = root / f"eval/glimpses/{model}/seed{seed}.parquet.examples.npz"
        arrays = {"images": images, "labels": labels}
        for p in policies:
            arrays[f"boxes_{p}"] = boxes
            arrays[f"pred_{p}"] = np.array([1, 2, 0])   # the third prediction is wrong
        np.savez(path, **arrays)


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("results"))


def _bars(ax):
    """(label, n points, y half-lengths, x half-lengths) of each error-bar curve of an axis."""
    out = []
    for c in ax.containers:
        line, _, cols = c.lines
        halves = [(np.diff(np.asarray(s)[:, 1]) / 2).item() if s[0][0] == s[1][0] else None
                  for col in cols for s in col.get_segments()]
        xhalves = [(np.diff(np.asarray(s)[:, 0]) / 2).item() for col in cols for s in col.get_segments()
                   if s[0][1] == s[1][1] and s[0][0] != s[1][0]]
        halves = [h for h in halves if h is not None]
        assert len(halves) == len(line.get_xdata())              # one vertical bar per point, none vacuous
        out.append((c.get_label(), len(line.get_xdata()), halves, xhalves))
    return out


def test_targets_are_one_importable_list():
    names = set(catalog.TARGETS)
    assert {"fig3", "fig4", "fig5", "fig6", "fig_supp1", "fig_supp2", "fig_supp3", "fig_learning", "table_supp1",
            "table_supp6", "table_summary", "table_plateau", "claims", "results_md", "index"} == names
    for name, target in catalog.TARGETS.items():
        module, function = target.function.split(":")
        assert callable(getattr(importlib.import_module(module), function)) and target.outputs and target.inputs, name
    # Importing the package must not pull plotting libraries or torch (every analysis job imports it).
    code = ("import sys, analysis; bad = [m for m in ('torch', 'matplotlib', 'seaborn') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_captions_exist_for_every_figure_and_table():
    from analysis.index import caption

    for name in catalog.TARGETS:
        if name != "index":
            assert len(caption(name)) > 20, name


def test_fig3_lines_points_and_sd_error_bars(res):
    fig = plot_fig3(res, train_glimpses=TRAIN_T)
    top1, top5, area = fig.axes[:3]
    curves = _bars(top1)
    policies = [c for c in curves if "full image" not in c[0]]
    full = [c for c in curves if "full image" in c[0]]
    assert len(policies) == 6 and len(full) == 4       # 6 policies (no ablations); ResNet, BagNet x2, NASNet
    assert all(n == T_MAX for _, n, _, _ in policies) and all(n == 1 for _, n, _, _ in full)
    for _, _, halves, _ in curves:
        np.testing.assert_allclose(halves, D, rtol=1e-6)
    assert len(_bars(area)) == 6
    dotted = [ln for ln in top1.lines if ln.get_linestyle() == ":"]
    assert len(dotted) == 1 and list(dotted[0].get_xdata()) == [TRAIN_T, TRAIN_T]
    # one colour per policy, the same as in every other figure
    colours = {c.get_label(): c.lines[0].get_color() for c in top1.containers}
    assert colours["Saccader"] == common.palette()["saccader"]
    assert {c.get_label(): c.lines[0].get_color() for c in _fig5_axes(res)[0].containers}["Saccader"] == \
        colours["Saccader"]


def _fig5_axes(res):
    return plot_fig5(res).axes


def test_fig5_and_supp2_accuracy_vs_area_and_occlusion(res):
    for fig in (plot_fig5(res), plot_fig_supp2(res)):
        used, occluded = fig.axes[:2]
        curves = _bars(used)
        assert len(curves) == 6 and all(n == T_MAX for _, n, _, _ in curves)
        for _, _, yh, xh in curves:
            np.testing.assert_allclose(yh, D, rtol=1e-6)
            assert len(xh) == T_MAX
            np.testing.assert_allclose(xh, D, rtol=1e-6)        # area is also ±SD over seeds
        occ = _bars(occluded)
        assert len(occ) == 7                                     # six policies + unoccluded ResNet at area 0
        saccader = next(c for c in occluded.containers if c.get_label() == "Saccader")
        np.testing.assert_allclose(saccader.lines[0].get_ydata()[0], 0.9 - 0.1 if "top-1" in
                                   occluded.get_ylabel() else 0.95 - 0.1)


def test_fig6_and_supp3(res):
    fig = plot_fig6(res, train_glimpses=TRAIN_T)
    for ax in fig.axes[:2]:
        curves = _bars(ax)
        assert [c[1] for c in curves] == [T_MAX, T_MAX]
        assert {c[0] for c in curves} == {"Saccader-NASNet, 64x64", "Saccader-NASNet, 95x95"}
        for _, _, halves, _ in curves:
            np.testing.assert_allclose(halves, D, rtol=1e-6)
    fig = plot_fig_supp3(res, train_glimpses=TRAIN_T)
    assert sorted(c[0] for c in _bars(fig.axes[0])) == sorted(common.label(n) for n in
                                                              ("saccader",) + common.ABLATIONS)


def test_fig4_and_supp1_glimpse_pictures(res):
    from matplotlib.patches import Rectangle

    fig = plot_fig4(res, train_glimpses=TRAIN_T)
    assert len(fig.axes) == 4 * 3                                # 4 policies x 3 saved images
    for ax in fig.axes:
        assert sum(isinstance(p, Rectangle) for p in ax.patches) == TRAIN_T
    first, third = fig.axes[0], fig.axes[2]
    assert first.title.get_color() == "green" and third.title.get_color() == "red"
    rect = next(p for p in first.patches if isinstance(p, Rectangle))
    assert (rect.get_x(), rect.get_y(), rect.get_width(), rect.get_height()) == (-0.5, -0.5, 4, 4)
    fig = plot_fig_supp1(res, train_glimpses=TRAIN_T, ncols=2)
    assert sum(ax.axison for ax in fig.axes) == 3


def test_tables_put_paper_beside_reproduced(res, tmp_path):
    analysis.run("table_supp6", res, tmp_path)
    analysis.run("table_summary", res, tmp_path, train_glimpses=TRAIN_T)
    analysis.run("table_supp1", res, tmp_path)
    md = (tmp_path / "tables/table_supp6.md").read_text()
    assert "clean, paper (ImageNet)" in md and "clean, reproduced (digits)" in md and "70.1" in md
    assert "80.0 ± 1.0" in md                                    # 0.8 ± 0.01 over seeds, in percent
    num = pd.read_csv(tmp_path / "tables/table_supp6.csv").set_index("model")
    assert num.loc["saccader", "pgd_acc_paper"] == 0.002 and num.loc["saccader", "n_seeds"] == 3
    np.testing.assert_allclose(num.loc["saccader", "clean_acc_sd"], D)
    summary = pd.read_csv(tmp_path / "tables/table_summary.csv")
    assert set(summary["num_glimpses"]) == {0, 6}                # paper's T = 6 present, and full-image rows
    nas = summary[summary["experiment"] == "nasnet"].set_index("resolution")
    assert nas.loc[95, "top1_paper"] == 0.7503 and pd.isna(nas.loc[64, "top1_paper"])
    sacc = summary[(summary["model"] == "saccader") & (summary["policy"] == "saccader")].iloc[0]
    np.testing.assert_allclose([sacc["top1_mean"], sacc["top1_sd"]], [0.8, D])
    assert "paper (ImageNet, Table Supp.1)" in (tmp_path / "tables/table_supp1.md").read_text()
    assert "<table" in (tmp_path / "tables/table_supp1.html").read_text()


def test_summary_falls_back_to_train_t_when_6_missing(tmp_path):
    from analysis.tables import summary_glimpses

    assert summary_glimpses([1, 2, 6], 3) == 6 and summary_glimpses([1, 2, 3, 4], 3) == 3


def test_claims_hold_and_flip_with_the_data(res, tmp_path):
    analysis.run("claims", res, tmp_path / "a", train_glimpses=TRAIN_T)
    held = pd.read_csv(tmp_path / "a/claims.csv")
    assert len(held) == 9 and (held["verdict"] == claims_mod.HOLDS).all(), held[["claim", "verdict"]]
    flipped_dir = make_results(tmp_path / "flipped", flip=True)
    analysis.run("claims", flipped_dir, tmp_path / "b", train_glimpses=TRAIN_T)
    flipped = pd.read_csv(tmp_path / "b/claims.csv")
    assert list(flipped["claim"]) == list(held["claim"])
    assert (flipped["verdict"] == claims_mod.REFUTED).all(), flipped[["claim", "verdict"]]
    assert "Bagnet" not in held.iloc[-1, 3] and "robust: BagNet-77-lowD" in flipped.iloc[-1, 3]


def test_robustness_needs_pgd_accuracy_above_chance():
    """A model near chance keeps a large fraction of its clean accuracy under PGD without being robust."""
    def attack(clean, pgd, spread=(-0.01, 0.0, 0.01)):
        return pd.DataFrame([{"model": "dram", "seed": s, "metric": m, "value": v + d}
                             for s, d in enumerate(spread) for m, v in (("clean_acc", clean), ("pgd_acc", pgd))])

    near_chance = attack(0.119, 0.062)  # the embedded DRAM of a 37-min run: ratio 0.52
    assert claims_mod._robustness(near_chance, 0.5, chance=0.1)["verdict"] == claims_mod.HOLDS
    assert claims_mod._robustness(near_chance, 0.5, chance=0.0)["verdict"] == claims_mod.UNDECIDED  # ratio 0.52 +- seeds
    robust = claims_mod._robustness(attack(0.8, 0.45), 0.5, chance=0.1)
    assert robust["verdict"] == claims_mod.REFUTED and "robust: DRAM" in robust["evidence"]
    assert "above chance (10.0%)" in robust["test"]
    # seeds on both sides of the bar: not shown to be robust, nor shown not to be
    unsure = claims_mod._robustness(attack(0.8, 0.38, spread=(-0.1, 0.0, 0.1)), 0.5, chance=0.1)
    assert unsure["verdict"] == claims_mod.UNDECIDED and "not shown to be below the bar: DRAM" in unsure["evidence"]
    assert unsure["observed effect"] and unsure["seeds for 80% power"]
    one_seed = claims_mod._robustness(attack(0.8, 0.1, spread=(0.0,)), 0.5, chance=0.1)
    assert one_seed["verdict"] == claims_mod.UNTESTED


def test_claim_intervals_follow_the_seeds():
    """A mean above 0 is not enough: with the paired differences of 5 seeds spread around it, the claim is
    undecided; the same mean with agreeing seeds holds; agreeing seeds on the other side refute it. Without per-image
    outcomes the interval is Student's t over seeds."""
    mean, lo, hi = claims_mod.interval([1.0, 2.0, 3.0])[:3]
    assert mean == 2.0 and hi - mean == pytest.approx(mean - lo) == pytest.approx(4.302653 * 1 / 3 ** 0.5)
    t = [1, 2]
    a = pd.DataFrame({1: [0.5, 0.5, 0.5, 0.5, 0.5], 2: [0.6] * 5})
    spread = pd.DataFrame({1: [0.40, 0.45, 0.52, 0.53, 0.55], 2: [0.5] * 5})  # mean 0.49 < 0.5, 3 of 5 seeds below
    agree = pd.DataFrame({1: [0.48, 0.485, 0.49, 0.495, 0.50 - 1e-9], 2: [0.5] * 5})
    assert claims_mod._beats(a, spread, t, "A", "B").verdict == claims_mod.UNDECIDED
    ok, evidence = claims_mod._beats(a, agree, t, "A", "B")[:2]
    assert ok == claims_mod.HOLDS and "claimed side at 2/2" in evidence and "5 seeds" in evidence
    assert claims_mod._beats(agree, a, t, "B", "A").verdict == claims_mod.REFUTED
    assert claims_mod._beats(a.iloc[:1], agree.iloc[:1], t, "A", "B")[0] == claims_mod.UNTESTED  # one seed


def test_num_classes_leaves_out_the_background_output(tmp_path):
    assert common.num_classes(tmp_path) == 1000  # no config: ImageNet
    (tmp_path / "config.yaml").write_text("dataset: {num_classes: 1001, label_offset: 1}\n")
    assert common.num_classes(tmp_path) == 1000
    (tmp_path / "config.yaml").write_text("dataset: {num_classes: 10, label_offset: 0}\n")
    assert common.num_classes(tmp_path) == 10


def test_claims_without_data_are_not_tested():
    empty = common.summarise(results.load([]))
    table = claims_mod.evaluate(empty, empty, empty, TRAIN_T)
    assert (table["verdict"] == claims_mod.UNTESTED).all()


def test_mixing_datasets_is_refused(tmp_path):
    root = make_results(tmp_path / "r")
    other = pd.read_parquet(root / "eval/glimpses/dram/seed0.parquet").assign(dataset="imagenet")
    results.save(other, root / "eval/glimpses/dram/seed0.parquet")
    with pytest.raises(UserError, match="mix datasets"):
        plot_fig3(root)


def test_cli_one_figure_in_seconds_and_missing_input(res, tmp_path):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "analysis", "fig3", "--results", str(res), "--out", str(tmp_path),
                           "--train-glimpses", "3"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert time.perf_counter() - start < 20
    assert (tmp_path / "figures/fig3.png").stat().st_size > 1000 and (tmp_path / "figures/fig3.pdf").exists()
    missing = subprocess.run([sys.executable, "-m", "analysis", "fig6", "--results", str(tmp_path / "nothing")],
                             cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no results for Fig 6")
    assert len(missing.stderr.strip().splitlines()) == 1


def test_index_page_is_self_contained(res, tmp_path):
    out = tmp_path
    analysis.run("fig3", res, out, train_glimpses=TRAIN_T)
    analysis.run("claims", res, out, train_glimpses=TRAIN_T)
    (res / "logs/train").mkdir(parents=True, exist_ok=True)
    (res / "logs/train/saccader_seed0.log").write_text("epoch 1\n")
    run = res / "runs/saccader/seed0"
    run.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.5]}).to_parquet(run / "train_log.parquet")
    page = (out / analysis.run("index", res, out)[0].name).read_text()
    assert '<img src="figures/fig3.png"' in page and "fig5.png (not built)" in page
    assert "Saccader beats ordered logits" in page                # claims inlined
    assert "saccader_seed0.log" in page and "runs/saccader/seed0: 2 rows" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    # the front page: verdict, the run's facts, the summary table, then the figures
    order = [page.index(k) for k in ('id="verdict"', "<h2>This run", 'id="table_summary"', "<h2>Figures")]
    assert order == sorted(order) and "9 claims on this run: <span class=\"holds\">9 holds</span>" in page
    assert "**" not in page and "<strong>Figure 3:" in page  # captions rendered, not literal markup


def test_duplicate_measurements_are_refused(res):
    df = results.load([res / "eval/glimpses/dram/seed0.parquet"])
    with pytest.raises(UserError, match="same measurement twice"):
        common.summarise(pd.concat([df, df]))


def test_single_seed_draws_without_sd(tmp_path):
    root = make_results(tmp_path / "r")
    for path in root.glob("**/seed[12].parquet"):
        path.unlink()
    fig = plot_fig_supp3(root, train_glimpses=TRAIN_T)
    assert all(h == 0 for c in _bars(fig.axes[0]) for h in c[2])
    analysis.run("table_supp6", root, tmp_path / "out")
    md = (tmp_path / "out/tables/table_supp6.md").read_text()
    assert "79.0 " in md and "±" not in md.split("\n", 4)[-1]        # seed 0 only: 0.8 - D


def test_train_glimpses_from_flag_then_resolved_config_then_paper(tmp_path):
    assert common.train_glimpses(tmp_path) == 6                  # the paper's T
    (tmp_path / "config.yaml").write_text("evaluate:\n  train_glimpses: 2\n")
    assert common.train_glimpses(tmp_path) == 2 and common.train_glimpses(tmp_path, 4) == 4


def test_the_run_config_is_an_option_of_each_run_not_a_state(res, tmp_path):
    """``--config`` reaches the targets as an option: a later run without it reads the results' own config again."""
    from analysis.__main__ import main

    other = tmp_path / "other.yaml"
    other.write_text("attack: {eps_255: 8}\n")
    assert main(["table_supp6", "--results", str(res), "--out", str(tmp_path / "a"), "--config", str(other)]) == 0
    assert "reproduced at eps = 8/255" in (tmp_path / "a/tables/table_supp6.md").read_text()
    analysis.run("table_supp6", res, tmp_path / "b")                # no config.yaml in res: the paper's budget
    assert "reproduced at eps = 2/255" in (tmp_path / "b/tables/table_supp6.md").read_text()


def test_occlusion_claim_compares_policies_at_equal_area():
    """Fig 5b plots accuracy against area occluded: random glimpses that cover more area per glimpse must be compared
    at the Saccader's area, not at the same T (here random is lower at every T, yet higher at equal area)."""
    def seeds(values, jitter=(0.0, 0.001)):
        return pd.DataFrame([[v + j for v in values] for j in jitter], columns=[1, 2, 3])

    sacc_acc, sacc_area = seeds([0.5, 0.4, 0.3]), seeds([0.10, 0.15, 0.20], (0.0, 0.0))
    rand_acc, rand_area = seeds([0.45, 0.35, 0.25]), seeds([0.10, 0.20, 0.30], (0.0, 0.0))
    ok, evidence, *_ = claims_mod._lower_at_equal_area(sacc_acc, sacc_area, rand_acc, rand_area, "S", "R")
    assert ok == claims_mod.REFUTED and "area 10.0%" in evidence  # at 10 % area: 50 % vs 45 %
    ok, evidence, *_ = claims_mod._lower_at_equal_area(sacc_acc - 0.2, sacc_area, rand_acc, rand_area, "S", "R")
    assert ok == claims_mod.HOLDS and "claimed side at 3/3" in evidence  # random interpolated: 40 % at 15 %, 35 % at 20 %


def test_figure_captions_render_as_text():
    from analysis.index import caption_html

    html = caption_html("fig3")
    assert "<strong>Figure 3:" in html and "**" not in html


def test_plateau_is_the_last_epochs_gain_on_dev_else_train():
    from analysis import learning

    def log(train, dev):
        return pd.DataFrame({"epoch": range(1, len(train) + 1), "train_top1": train, "dev_top1": dev})

    nan = float("nan")
    flat = learning.plateau_status(log([0.5, 0.7, 0.9], [0.60, 0.700, 0.705]))
    assert flat["status"] == learning.PLATEAU and flat["judged on"] == "dev top-1"
    assert flat["last gain (pts)"] == pytest.approx(0.5)
    rising = learning.plateau_status(log([0.5, 0.7, 0.71], [nan, 0.6, 0.65]))
    assert rising["status"] == learning.LEARNING and rising["last gain (pts)"] == pytest.approx(5.0)
    train_only = learning.plateau_status(log([0.5, 0.7, 0.9], [nan, nan, 0.8]))  # dev measured once
    assert train_only["judged on"] == "train top-1" and train_only["status"] == learning.LEARNING
    assert learning.plateau_status(log([0.5], [0.6]))["status"] == learning.UNKNOWN
    every_5 = learning.plateau_status(log([0.1] * 10, [nan] * 4 + [0.5] + [nan] * 4 + [0.6]))  # dev every 5 epochs
    assert every_5["last gain (pts)"] == pytest.approx(2.0) and every_5["status"] == learning.LEARNING


def test_learning_curves_and_plateau_table_from_the_training_logs(tmp_path):
    for run, seed, dev in (("saccader", 0, [0.5, 0.6]), ("saccader", 1, [0.5, 0.505]), ("dram", 0, [0.2, 0.3])):
        folder = tmp_path / f"runs/{run}/seed{seed}"
        folder.mkdir(parents=True)
        pd.DataFrame({"epoch": [1, 2], "loss": [2.0, 1.0], "train_top1": [0.4, 0.5], "dev_top1": dev}).to_parquet(
            folder / "train_log.parquet")
    analysis.run("fig_learning", tmp_path, tmp_path)
    analysis.run("table_plateau", tmp_path, tmp_path)
    assert (tmp_path / "figures/fig_learning.png").stat().st_size > 0
    table = pd.read_csv(tmp_path / "tables/table_plateau.csv")
    assert list(table["status"]) == ["still learning", "still learning", "plateau"]
    assert "(1 of 3 runs x seeds)" in (tmp_path / "tables/table_plateau.md").read_text()


def test_claims_use_per_image_outcomes_where_the_jobs_stored_them(tmp_path):
    """With per-image hits beside the glimpses results, the ablation claims' intervals cover seeds x images: wider
    than seeds alone (test-set sampling added), and named so in the evidence."""
    res = make_results(tmp_path / "results")
    analysis.run("claims", res, tmp_path / "seeds", train_glimpses=TRAIN_T)
    rng = np.random.default_rng(0)
    for model in ("saccader", "saccader_no_pretrain"):
        for seed in SEEDS:
            frame = results.load(res / f"eval/glimpses/{model}/seed{seed}.parquet")
            per_image = {}
            for r in frame[frame["metric"] == "top1"].itertuples():
                k = round(100 * r.value)
                hits = rng.permutation([1.0] * k + [0.0] * (100 - k))
                per_image[(r.policy, r.resolution, r.num_glimpses, "top1")] = hits
            results.save_images({"experiment": "glimpses", "model": model, "seed": seed}, per_image,
                                catalog.images_path(res / f"eval/glimpses/{model}/seed{seed}.parquet"))
    analysis.run("claims", res, tmp_path / "images", train_glimpses=TRAIN_T)
    seeds_only, both = (pd.read_csv(tmp_path / f"{d}/claims.csv").set_index("claim") for d in ("seeds", "images"))
    claim = "Location pre-training helps"
    evidence = [c for c in both.columns if c.startswith("evidence")][0]
    assert "(seeds x images)" in both.loc[claim, evidence] and "(seeds)" in seeds_only.loc[claim, evidence]

    def width(text):
        lo, hi = re.search(r"95% CI \[([-+\d.]+), ([-+\d.]+)\]", text).groups()
        return float(hi) - float(lo)

    assert width(both.loc[claim, evidence]) > 2 * width(seeds_only.loc[claim, evidence])
