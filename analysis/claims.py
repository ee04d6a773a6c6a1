"""The paper's qualitative claims tested on this run's data: one row per claim, its verdict and the numbers behind it.

Verdicts. Every comparison is paired by seed (seed s of one model against seed s of the other, which share their
initialisation chain and test images). A claim *holds* where the 95 % interval of the mean paired difference lies
on the claimed side at every T it names, is *refuted* where it lies on the other side at some T it names, and is
*undecided* otherwise; a claim whose inputs are missing, or with one seed, is *not tested*. Beside the verdict, and
labelled as a weaker claim, the same test pooled over T: each seed's mean difference over the claim's T, with no T
significantly reversed. An undecided claim shows its observed effect and how many seeds a paired t test would need
to decide it at that effect with 80 % power.

Intervals. The test images are the same for every seed, so a mean over seeds and images has two sources of
variance, crossed: seeds (training) and images (test-set sampling). Where the evaluation stored per-image outcomes
(``images_seed<S>.parquet`` beside each seed's results: ``saccader.catalog.images_path``), the interval is
the two-way random-effects (seeds x images) variance of the grand mean, ``(MS_seed + MS_image - MS_residual) / (k n)``, with Satterthwaite's degrees of freedom:
the variance a two-level bootstrap (seeds, then images) estimates, in closed form. A bootstrap over 5 seeds cannot
be used: its percentile interval never reaches past the extreme seeds and under-covers (tests/test_claims_coverage.py
measures both). Without per-image outcomes the interval is Student's t over seeds, which leaves test sampling out.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from analysis import common
from analysis.area import OCCLUSION
from analysis.glimpses import GLIMPSES, NASNET
from analysis.tables import ATTACK
from saccader.catalog import images_path

HOLDS, REFUTED, UNDECIDED, UNTESTED = "holds", "refuted", "undecided", "not tested"
VERDICTS = (HOLDS, REFUTED, UNDECIDED, UNTESTED)
LEVEL = 0.95
POWER = 0.8
MAX_SEEDS = 1000  # beyond this, "seeds needed" reads "more than 1000"
# A model is called robust to PGD when its PGD accuracy keeps at least this fraction of its clean accuracy and
# stays above chance. The paper's models keep at most 7.6 % (BagNet-77-lowD: 5.5 / 72.0, Table Supp.6); half is a
# generous bar. A model near chance on clean images has nothing to lose, so the ratio alone would call it robust;
# accuracy at or below guessing under attack is not robustness ("meaningfully robust", Appendix D).
ROBUST_FRACTION = 0.5


class Interval(NamedTuple):
    """A mean difference, its 95 % interval, and what the seeds-needed estimate needs: the seed part and the image
    part of the variance of the mean (the image part does not shrink with more seeds)."""
    mean: float
    lo: float
    hi: float
    seed_var: float = float("nan")  # variance between seeds of a seed's mean difference
    image_var: float = 0.0          # variance of the mean due to test-image sampling
    per_image: bool = False


def interval(diffs, images: np.ndarray | None = None) -> Interval:
    """The 95 % interval of the mean paired difference: Student's t over the per-seed differences ``diffs``, or,
    given ``images`` (seeds x images, per-image differences whose row means are ``diffs``), the crossed two-way
    random-effects variance of the grand mean with Satterthwaite's degrees of freedom. NaN bounds below 2 seeds."""
    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return Interval(float(d.mean()) if len(d) else float("nan"), float("nan"), float("nan"))
    if images is None or images.shape[1] < 2:
        se2, df = d.var(ddof=1) / len(d), len(d) - 1
        seed_var, image_var = d.var(ddof=1), 0.0
    else:
        x = np.asarray(images, dtype=float)
        k, n = x.shape
        rows, cols, grand = x.mean(1), x.mean(0), x.mean()
        ms = np.array([n * rows.var(ddof=1), k * cols.var(ddof=1),
                       ((x - rows[:, None] - cols[None, :] + grand) ** 2).sum() / ((k - 1) * (n - 1))])
        dfs = np.array([k - 1, n - 1, (k - 1) * (n - 1)])
        coef = np.array([1.0, 1.0, -1.0]) / (k * n)
        # never narrower than the seeds alone (the estimate of a variance component can come out negative)
        se2 = max(float(coef @ ms), ms[0] / (k * n))
        terms = (coef * ms) ** 2 / dfs
        df = max(se2 ** 2 / terms.sum(), 1.0) if terms.sum() > 0 else k - 1
        d, seed_var = rows, rows.var(ddof=1)
        image_var = se2 - ms[0] / (k * n)  # (MS_image - MS_residual) / (k n): test sampling, which seeds do not shrink
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * np.sqrt(se2)
    m = float(np.mean(d))
    return Interval(m, m - half, m + half, float(seed_var), float(image_var), images is not None)


def seeds_needed(iv: Interval, power: float = POWER) -> float:
    """Seeds a paired t test needs to put the interval on the side of the observed mean with probability ``power``,
    if the observed mean and variances were the truth (noncentral t; the image part of the variance stays)."""
    if not np.isfinite(iv.seed_var) or iv.mean == 0:
        return float("inf")
    crit = lambda k: stats.t.ppf(0.5 + LEVEL / 2, k - 1)  # noqa: E731
    for k in range(2, MAX_SEEDS + 1):
        nc = abs(iv.mean) / np.sqrt(iv.seed_var / k + max(iv.image_var, 0.0))
        if stats.nct.sf(crit(k), k - 1, nc) >= power:
            return float(k)
    return float("inf")


class Part(NamedTuple):
    """One comparison of a claim: its verdict and evidence, the per-T intervals and the pooled interval."""
    verdict: str
    evidence: str
    ivs: dict
    pooled: Interval | None = None


def _pp(v) -> str:
    return f"{100 * v:+.1f}"


def _pct(v) -> str:
    return f"{100 * v:.1f}%"


def _describe(diffs, iv: Interval) -> str:
    source = "seeds x images" if iv.per_image else "seeds"
    return (f"per-seed differences {', '.join(_pp(d) for d in diffs)} pts; mean {_pp(iv.mean)}, 95% CI "
            f"[{_pp(iv.lo)}, {_pp(iv.hi)}] ({source})")


def _judge(ivs: dict) -> str:
    if not ivs:
        return UNTESTED
    if all(iv.lo > 0 for iv in ivs.values()):
        return HOLDS
    return REFUTED if any(iv.hi < 0 for iv in ivs.values()) else UNDECIDED


def per_seed(frame: pd.DataFrame, name: str, metric: str, column: str = "trace") -> pd.DataFrame:
    """Seeds x T table of one trace's metric (rows: seeds, columns: num_glimpses)."""
    if frame.empty or column not in frame:
        return pd.DataFrame()
    part = frame[(frame[column] == name) & (frame["metric"] == metric)]
    return part.pivot_table(index="seed", columns="num_glimpses", values="value", aggfunc="first")


class Images:
    """Per-image outcomes (``images_seed<S>.parquet``), looked up as a seeds x images table per (experiment, trace,
    metric, T, resolution); ``None`` where they were not stored."""

    def __init__(self, frame: pd.DataFrame | None = None):
        self.tables = {}
        if frame is not None and len(frame):
            keys = ["experiment", "trace", "metric", "num_glimpses", "resolution"]
            for key, g in _traced(frame).groupby(keys):
                self.tables[key] = g.pivot_table(index="seed", columns="image", values="value", aggfunc="first")

    def get(self, experiment, name, metric, t, resolution=None):
        hits = [v for (e, n, m, tt, r), v in self.tables.items()
                if (e, n, m, tt) == (experiment, name, metric, t) and resolution in (None, r)]
        return hits[0] if len(hits) == 1 else None

    def side(self, name, metric="top1", resolution=None, experiment="glimpses"):
        """T -> seeds x images of one trace (or None)."""
        return lambda t: self.get(experiment, name, metric, t, resolution)


def _matrix(a_img, b_img, seeds, t, sign):
    """seeds x images paired differences at ``t``, or None without per-image outcomes for both sides."""
    if a_img is None or b_img is None:
        return None
    a, b = a_img(t), b_img(t)
    if a is None or b is None or not set(seeds) <= set(a.index) & set(b.index):
        return None
    images = a.columns.intersection(b.columns)
    return sign * (a.loc[seeds, images].to_numpy() - b.loc[seeds, images].to_numpy())


def _compare(diffs: dict, mats: dict, what: str, n_seeds: int) -> Part:
    """The verdict over the T of ``diffs`` (T -> per-seed differences, claimed side positive), the pooled test and
    the evidence naming the T with the lowest bound."""
    ivs = {t: interval(d, mats.get(t)) for t, d in diffs.items()}
    ts = list(diffs)
    worst = min(ts, key=lambda t: ivs[t].lo)
    n_hold = sum(iv.lo > 0 for iv in ivs.values())
    n_mean = sum(iv.mean > 0 for iv in ivs.values())
    n_rev = sum(iv.hi < 0 for iv in ivs.values())
    seedwise = np.mean([diffs[t] for t in ts], axis=0)
    pooled_mats = [mats.get(t) for t in ts]
    pooled = interval(seedwise, np.mean(pooled_mats, axis=0) if all(m is not None for m in pooled_mats)
                      and len({m.shape for m in pooled_mats}) == 1 else None)
    evidence = (f"{what}, at T={worst} (lowest bound): {_describe(diffs[worst], ivs[worst])}; interval on the "
                f"claimed side at {n_hold}/{len(ts)} of T={ts[0]}..{ts[-1]}, on the other side at {n_rev} (mean on "
                f"the claimed side at {n_mean}), {n_seeds} seeds")
    return Part(_judge(ivs), evidence, ivs, pooled)


def _beats(a: pd.DataFrame, b: pd.DataFrame, ts, a_name: str, b_name: str, lower_wins: bool = False,
           a_img=None, b_img=None) -> Part:
    """Whether ``a`` is above ``b`` (below if ``lower_wins``) at every T in ``ts``: the 95 % interval of the paired
    difference above 0 at each T (``a_img``/``b_img``: T -> seeds x images per-image outcomes, or None)."""
    seeds = sorted(set(a.index) & set(b.index))
    ts = [t for t in ts if t in a.columns and t in b.columns]
    if not ts or not seeds:
        return Part(UNTESTED, f"no glimpse count with both {a_name} and {b_name}", {})
    if len(seeds) < 2:
        return Part(UNTESTED, f"one seed of {a_name} and {b_name}: no interval", {})
    sign = -1.0 if lower_wins else 1.0
    diffs = {t: sign * (a.loc[seeds, t] - b.loc[seeds, t]).to_numpy() for t in ts}
    mats = {t: _matrix(a_img, b_img, seeds, t, sign) for t in ts}
    return _compare(diffs, mats, f"{a_name} {'below' if lower_wins else 'above'} {b_name}", len(seeds))


def _lower_at_equal_area(a_acc: pd.DataFrame, a_area: pd.DataFrame, b_acc: pd.DataFrame, b_area: pd.DataFrame,
                         a_name: str, b_name: str) -> Part:
    """Whether curve ``a`` (accuracy vs area, per seed, indexed by T) lies below ``b`` at every T whose area lies
    inside ``b``'s area range for every seed; ``b`` is each seed's own curve linearly interpolated at ``a``'s area
    (Fig 5b compares policies at equal area occluded). Seeds only: the interpolation mixes images of two T."""
    seeds = sorted(set(a_acc.index) & set(b_acc.index) & set(a_area.index) & set(b_area.index))
    if not seeds:
        return Part(UNTESTED, f"no occlusion results for both {a_name} and {b_name}", {})
    margins, areas = {}, {}
    for t in a_acc.columns:
        ds = []
        for s in seeds:
            b = pd.DataFrame({"area": b_area.loc[s], "acc": b_acc.loc[s]}).dropna().sort_values("area")
            x = a_area.loc[s].get(t, np.nan)
            if b.empty or np.isnan(x) or not b["area"].min() <= x <= b["area"].max():
                break
            ds.append(float(np.interp(x, b["area"], b["acc"])) - a_acc.loc[s, t])
        else:
            margins[t], areas[t] = np.array(ds), float(a_area.loc[seeds, t].mean())
    if not margins:
        return Part(UNTESTED, f"the areas of {a_name} and {b_name} do not overlap", {})
    if len(seeds) < 2:
        return Part(UNTESTED, f"one seed of {a_name} and {b_name}: no interval", {})
    part = _compare(margins, {}, f"{b_name} minus {a_name}", len(seeds))
    t = min(part.ivs, key=lambda k: part.ivs[k].lo)
    return part._replace(evidence=f"at area {_pct(areas[t])} (T of {a_name}): {part.evidence}")


def _row(claim, source, test, parts: list[Part] | Part, note: str = "") -> dict:
    """A claims-table row: the claim's verdict over its parts (all hold: holds; one refuted: refuted), the pooled
    test (weaker), the observed effect and the seeds an undecided claim needs."""
    parts = [parts] if isinstance(parts, Part) else parts
    verdicts = [p.verdict for p in parts]
    verdict = UNTESTED if UNTESTED in verdicts else REFUTED if REFUTED in verdicts else \
        HOLDS if all(v == HOLDS for v in verdicts) else UNDECIDED
    evidence = ". ".join(p.evidence for p in parts) + (f". {note}" if note else "")
    pooled = effect = needed = ""
    if verdict != UNTESTED:
        pooled = "; ".join(_pooled(p) for p in parts if p.pooled is not None and len(p.ivs) > 1)
    if verdict == UNDECIDED:
        open_ = [(t, iv) for p in parts if p.verdict == UNDECIDED for t, iv in p.ivs.items() if iv.lo <= 0]
        t, iv = min(open_, key=lambda x: x[1].lo)
        effect = f"{_pp(iv.mean)} pts [{_pp(iv.lo)}, {_pp(iv.hi)}] at {_at(t)}"
        wrong = [t for t, iv in open_ if iv.mean <= 0]
        n = max(seeds_needed(iv) for _, iv in open_)
        needed = (f"none at this effect (mean on the other side at {', '.join(map(_at, wrong))})" if wrong else
                  f"more than {MAX_SEEDS}" if not np.isfinite(n) else f"{int(n)}")
    return {"claim": claim, "paper source": source, "test": test, "evidence": evidence, "verdict": verdict,
            "pooled over T (weaker)": pooled, "observed effect": effect, "seeds for 80% power": needed}


def _at(key) -> str:
    """Where a part's interval was taken: a glimpse count, or a model's name (the robustness claim)."""
    return key if isinstance(key, str) else f"T={key}"


def _pooled(p: Part) -> str:
    iv = p.pooled
    reversed_ = [t for t, i in p.ivs.items() if i.hi < 0]
    verdict = HOLDS if iv.lo > 0 and not reversed_ else REFUTED if iv.hi < 0 else UNDECIDED
    return f"{verdict}: mean {_pp(iv.mean)} pts [{_pp(iv.lo)}, {_pp(iv.hi)}]" + \
        (f", reversed at T={', '.join(map(str, reversed_))}" if reversed_ else "")


def _untested(claim, source, test, why) -> dict:
    return _row(claim, source, test, Part(UNTESTED, why, {}))


def _traced(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame.assign(trace=pd.Series(dtype=str))
    return frame.assign(trace=[common.trace(m, p) for m, p in zip(frame["model"], frame["policy"])])


def evaluate(glimpses: pd.DataFrame, occlusion: pd.DataFrame, attack: pd.DataFrame, train_t: int,
             robust_fraction: float = ROBUST_FRACTION, eps: str = "2/255",
             nasnet: pd.DataFrame | None = None, chance: float = 0.0, images: Images | None = None,
             attack_images: pd.DataFrame | None = None) -> pd.DataFrame:
    """Test each claim on per-seed results (the tidy results frames; empty frames for missing inputs) and, where
    given, per-image outcomes."""
    glimpses, occlusion = _traced(glimpses), _traced(occlusion)
    images = images or Images()
    rows = []
    top1 = {name: per_seed(glimpses, name, "top1") for name in common.traces()}
    area = {name: per_seed(glimpses, name, "area") for name in common.traces()}
    img = {name: images.side(name) for name in common.traces()}
    few = range(1, train_t + 1)

    p1 = _beats(top1["saccader"], top1["ordered_logits"], few, "Saccader", "ordered logits",
                a_img=img["saccader"], b_img=img["ordered_logits"])
    p2 = _beats(top1["saccader"], top1["random"], few, "Saccader", "random", a_img=img["saccader"],
                b_img=img["random"])
    rows.append(_row("Saccader beats ordered logits and random at few glimpses", "Fig 3a, Section 4.1",
                     f"top-1 of Saccader > both policies at every T <= {train_t} (training T)", [p1, p2]))

    ts = sorted(set(area["saccader"].columns) | set(area["ordered_logits"].columns))
    p = _beats(area["ordered_logits"], area["saccader"], [t for t in ts if t >= 2], "ordered logits",
               "Saccader", lower_wins=True)
    rows.append(_row("Ordered-logits glimpses cover less area than Saccader's", "Fig 3b, Fig 4c, Section 4.1",
                     "area covered by ordered logits < Saccader's at every T >= 2 (at T=1 both cover one patch)",
                     p._replace(evidence=f"area, {p.evidence}")))

    rows.append(_dram_claim(top1["dram"], top1["saccader"], train_t, img["dram"], img["saccader"]))

    occ = {name: per_seed(occlusion, name, "occluded_top1") for name in ("saccader", "random")}
    occ_area = {name: per_seed(occlusion, name, "area") for name in ("saccader", "random")}
    p = _lower_at_equal_area(occ["saccader"], occ_area["saccader"], occ["random"], occ_area["random"],
                             "Saccader glimpses occluded", "random glimpses occluded")
    rows.append(_row("Occluding Saccader's glimpses hurts ResNet-v2-50 more than occluding random ones",
                     "Fig 5b, Section 4.2", "ResNet-v2-50 top-1 with Saccader's glimpses occluded < with random "
                     "glimpses occluded at the same area occluded (random's curve interpolated), at every area "
                     "both cover", p._replace(evidence=f"ResNet-v2-50 top-1, {p.evidence}")))

    sacc = top1["saccader"]
    for ablation, what in (("saccader_no_pretrain", "Location pre-training"),
                           ("saccader_no_attention", "The attention network")):
        p = _beats(sacc, top1[ablation], sorted(sacc.columns), "Saccader", common.label(ablation),
                   a_img=img["saccader"], b_img=img[ablation])
        rows.append(_row(f"{what} helps", "Fig Supp.3, Section 4.2",
                         f"top-1 of Saccader > {common.label(ablation)} at every T",
                         p._replace(evidence=f"top-1, {p.evidence}")))

    rows.extend(_nasnet_claims(sacc, nasnet if nasnet is not None else glimpses.iloc[:0], images))
    rows.append(_robustness(attack, robust_fraction, eps, chance, attack_images))
    return pd.DataFrame(rows)


def _dram_claim(dram: pd.DataFrame, sacc: pd.DataFrame, train_t: int, dram_img=None, sacc_img=None) -> dict:
    """Fig 3a: DRAM gains nothing from glimpses past its training T, the Saccader does. Tested as one paired
    difference: the Saccader's gain from T = train_t to the largest T minus DRAM's, seed by seed."""
    claim = ("DRAM does not improve past its trained number of glimpses while Saccader does", "Fig 3a, Section 4.1")
    t_max = min(max(dram.columns, default=0), max(sacc.columns, default=0))
    test = (f"the Saccader's gain from T = {train_t} to T = {t_max} minus DRAM's gain over the same T, paired by "
            "seed, > 0")
    if train_t not in dram.columns or train_t not in sacc.columns or t_max <= train_t:
        return _untested(*claim, test, f"needs DRAM and Saccader top-1 at T={train_t} and beyond")
    seeds = sorted(set(dram.index) & set(sacc.index))
    if len(seeds) < 2:
        return _untested(*claim, test, "one seed: no interval")
    gain = lambda f: (f.loc[seeds, t_max] - f.loc[seeds, train_t]).to_numpy()  # noqa: E731
    diffs = {t_max: gain(sacc) - gain(dram)}
    mats = {}
    ms = [_matrix(x_img, x_img and (lambda t, x=x_img: x(train_t)), seeds, t_max, 1.0)
          for x_img in (sacc_img, dram_img)]
    if all(m is not None for m in ms) and ms[0].shape == ms[1].shape:
        mats[t_max] = ms[0] - ms[1]
    part = _compare(diffs, mats, "Saccader's gain minus DRAM's", len(seeds))
    note = (f"Saccader gain {_describe(gain(sacc), interval(gain(sacc)))}; DRAM gain "
            f"{_describe(gain(dram), interval(gain(dram)))}")
    return _row(*claim, test, part, note)


def _nasnet_claims(saccader: pd.DataFrame, nasnet: pd.DataFrame, images: Images) -> list[dict]:
    """Section 4.3, Fig 6: a NASNet classifying the Saccader's patches is more accurate than the Saccader, and
    patches from the high-resolution image are more accurate still."""
    curves = {}
    if len(nasnet):
        part = nasnet[nasnet["metric"] == "top1"]
        curves = {res: g.pivot_table(index="seed", columns="num_glimpses", values="value", aggfunc="first")
                  for res, g in part.groupby("resolution")}
    empty = pd.DataFrame()
    low, top = (min(curves), max(curves)) if curves else (None, None)
    base = curves[low] if curves else empty
    high = curves[top] if len(curves) > 1 else empty
    nas = lambda r: images.side("saccader", resolution=r, experiment="nasnet")  # noqa: E731
    p1 = _beats(base, saccader, sorted(base.columns), "Saccader-NASNet", "Saccader", a_img=nas(low),
                b_img=images.side("saccader"))
    p2 = _beats(high, base, sorted(high.columns), "Saccader-NASNet, high resolution",
                "Saccader-NASNet, base resolution", a_img=nas(top), b_img=nas(low))
    return [_row("A NASNet classifying the Saccader's patches is more accurate than the Saccader",
                 "Fig 6, Section 4.3", "top-1 of Saccader-NASNet (base resolution) > Saccader at every T",
                 p1._replace(evidence=f"top-1, {p1.evidence}")),
            _row("Patches from the high-resolution image improve Saccader-NASNet further", "Fig 6, Section 4.3",
                 "top-1 of Saccader-NASNet on high-resolution patches (331) > on base-resolution patches (224) at "
                 "every T", p2._replace(evidence=f"top-1, {p2.evidence}"))]


def _robustness(attack: pd.DataFrame, robust_fraction: float, eps: str = "2/255", chance: float = 0.0,
                images: pd.DataFrame | None = None) -> dict:
    """Appendix D: "no attention-based model we tested is meaningfully robust" to PGD at eps = 2/255 (``eps``: the
    budget of this run, which the embedded config scales to its smaller images). ``chance``: top-1 of guessing,
    1 / number of classes. Per seed, a model's margin is min(PGD - fraction x clean, PGD - chance): positive when
    robust. The claim holds when every model's margin interval lies below 0 and is refuted when one model's lies
    above 0. With per-image outcomes (``images``), the term binding on the mean is taken per image."""
    test = (f"a model is robust when its PGD accuracy >= {robust_fraction:.0%} of its clean accuracy and above "
            f"chance ({_pct(chance)}); the claim holds when, for every model, the 95% interval of the per-seed "
            "margin min(PGD - fraction x clean, PGD - chance) lies below 0")
    claim = f"No model is robust to PGD at eps = {eps}" + ("" if eps == "2/255" else " (paper: 2/255)")
    source = "Table Supp.6, Appendix D"
    if attack.empty:
        return _untested(claim, source, test, "no attack results")
    wide = attack.pivot_table(index=["model", "seed"], columns="metric", values="value", aggfunc="first")
    if not {"clean_acc", "pgd_acc"} <= set(wide.columns):
        return _untested(claim, source, test, "attack results lack clean_acc or pgd_acc")
    if len(wide.index.get_level_values("seed").unique()) < 2:
        return _untested(claim, source, test, "one seed: no interval")
    parts, robust, open_ = [], [], []
    for model, r in wide.groupby(level="model"):
        ratio_term = (r["pgd_acc"] - robust_fraction * r["clean_acc"]).to_numpy()
        chance_term = (r["pgd_acc"] - chance).to_numpy()
        margin = np.minimum(ratio_term, chance_term)
        mat = _attack_margins(images, model, r.index.get_level_values("seed"), robust_fraction, chance,
                              ratio_term.mean() <= chance_term.mean())
        iv = interval(-margin, mat)  # claimed side (not robust) positive
        label = common.label(model)
        part = _compare({label: -margin}, {label: mat} if mat is not None else {}, label, len(margin))
        parts.append(part._replace(evidence=(
            f"{label} PGD {_pct(r['pgd_acc'].mean())} / clean {_pct(r['clean_acc'].mean())}, margin "
            f"{_pp(-iv.mean)} pts [{_pp(-iv.hi)}, {_pp(-iv.lo)}]"
            f"{' (seeds x images)' if iv.per_image else ''}")))
        (robust if iv.hi < 0 else open_ if iv.lo <= 0 else []).append(label)
    note = (f"robust: {', '.join(robust)}" if robust else "") + ("; " if robust and open_ else "") + \
        (f"not shown to be below the bar: {', '.join(open_)}" if open_ else "")
    return _row(claim, source, test, parts, note)


def _attack_margins(images, model, seeds, fraction, chance, ratio_binds) -> np.ndarray | None:
    """seeds x images of (not robust) margins -(PGD - fraction x clean) or -(PGD - chance), per image."""
    if images is None or images.empty:
        return None
    part = images[images["model"] == model]
    wide = {m: g.pivot_table(index="seed", columns="image", values="value", aggfunc="first")
            for m, g in part.groupby("metric")}
    if not {"clean_acc", "pgd_acc"} <= set(wide) or not set(seeds) <= set(wide["pgd_acc"].index):
        return None
    pgd, clean = wide["pgd_acc"].loc[list(seeds)].to_numpy(), wide["clean_acc"].loc[list(seeds)].to_numpy()
    return -(pgd - fraction * clean) if ratio_binds else -(pgd - chance)


def load_images(results_dir, patterns, metrics) -> pd.DataFrame:
    """The per-image outcomes (``metrics`` only) beside the results matching ``patterns``; empty where none were
    stored (results of a run before they were)."""
    files = [f for f in map(images_path, common.paths(results_dir, patterns)) if os.path.exists(f)]
    frames = [pd.read_parquet(f, filters=[("metric", "in", list(metrics))]) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def claims(results_dir, out_dir, train_glimpses: int | None = None, robust_fraction: float = ROBUST_FRACTION,
           config=None):
    """Write ``claims.csv/.md/.html``: each claim, how it is tested, the numbers, and its verdict."""
    frames = {name: common.load(results_dir, pats, name, required=False)
              for name, pats in (("glimpses", GLIMPSES), ("occlusion", OCCLUSION), ("attack", ATTACK),
                                 ("nasnet", NASNET))}
    dataset = common.one_dataset(pd.concat(frames.values()), "claims")
    for frame in frames.values():
        common.summarise(frame)  # refuses a measurement repeated within a seed
    images = Images(load_images(results_dir, [*GLIMPSES, *NASNET], ["top1"]))
    table = evaluate(frames["glimpses"], frames["occlusion"], frames["attack"],
                     common.train_glimpses(results_dir, train_glimpses, config), robust_fraction,
                     common.attack_eps(results_dir, config), frames["nasnet"],
                     1.0 / common.num_classes(results_dir, config),
                     images, load_images(results_dir, ATTACK, ["clean_acc", "pgd_acc"]))
    table = table.rename(columns={"evidence": f"evidence ({dataset}, paired by seed, 95% interval)"})
    return common.save_table(table, out_dir, "claims", title=f"The paper's claims tested on {dataset}")
