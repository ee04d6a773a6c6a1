"""The experiment catalog: every name the experiment is built from, declared once, importable without torch.

    STAGES       training stages (``train.<run>.stage``), each implemented by an ``@objective(stage)`` class next to
                 its model's code (``saccader/objectives.py``, ``baselines/dram.py``)
    MODELS       registry names -> constructor, fixed arguments, composite parts, label (``saccader.models``)
    RUNS         runs the evaluation and the figures name, with their labels (the Saccader ablations are traces)
    policies()   glimpse policies with label and figure order: the learned ones (Saccader, DRAM) are declared here;
                 each engineered policy is declared by ``@policy(...)`` on its function in ``baselines/policies/``,
                 read here from the source text (no import, so no torch)
    EVALUATIONS  evaluation jobs: kind -> evaluated name -> training runs whose ``model.pt`` it loads
    ATTACKS      attacked runs (Table Supp.6) and whether each picks glimpses
    RESULTS      the results files the figures read (glob patterns); ``images_path`` names each job's per-image file
    TARGETS      figures, tables, claims and pages: name -> ``Target(function, inputs, outputs)`` (built by
                 ``analysis.run``; the workflow has one rule per target, ``saccader plan`` totals their GPU-hours)

The config schema's checks (``saccader.pipeline.config``), the workflow's job lists (``workflow/rules``), the
evaluation and attack jobs, the results vocabulary (``saccader.pipeline.results``) and the figures (``analysis``) all
read these (the catalog imports neither the machinery nor ``analysis``); an unknown name is a ``UserError`` naming
the known ones. A figure draws every trace present in the data, in ``traces()`` order, so a new policy appears in
Figs 3 and 5 and the summary table without an edit there.
"""

from __future__ import annotations

import ast
import functools
import importlib
from dataclasses import dataclass
import os
from pathlib import Path
from typing import Callable

from saccader.errors import UserError

__all__ = ["Stage", "Model", "Run", "Policy", "STAGES", "MODELS", "RUNS", "EVALUATIONS", "ATTACKS", "FULL_IMAGE",
           "objective", "objective_class", "policy", "policies", "engineered_policies", "policy_function", "traces",
           "ablations", "label", "known", "required_runs", "attacked_runs", "glimpse_source", "own_evaluations",
           "RESULTS", "images_path", "Target", "TARGETS"]

# ------------------------------------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    name: str
    objective: str  # what it minimises, by the paper's equation
    module: str  # where its ``@objective(name)`` class is (imported only to train)


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("classify", "eq 4 / eq 7: cross-entropy on the full image (BagNets on mean logits, ResNet, NASNet)",
          "saccader.objectives"),
    Stage("location_pretrain", "eq 5: the location path learns the cells in descending order of logit",
          "saccader.objectives"),
    Stage("reinforce", "eq 6: REINFORCE over S sampled trajectories + cross-entropy", "saccader.objectives"),
    Stage("dram_pretrain", "DRAM classification pre-training on random glimpses (Appendix C)", "baselines.dram"),
    Stage("dram", "DRAM hybrid loss: cross-entropy + REINFORCE over S samples (Appendix C)", "baselines.dram"),
    Stage("glimpse_finetune", "cross-entropy of a NASNet on the patches a frozen Saccader picks (Tables Supp.2-3)",
          "saccader.objectives"),
)}
_objectives: dict[str, type] = {}


def objective(stage: str) -> Callable:
    """Register the class that implements training stage ``stage`` (declared in ``STAGES``)."""
    def register(cls: type) -> type:
        _objectives[known("stage", stage, STAGES)] = cls
        return cls

    return register


def objective_class(stage: str) -> type:
    """The objective class of training stage ``stage`` (its module is imported on first use)."""
    if stage not in _objectives:
        importlib.import_module(STAGES[known("stage", stage, STAGES)].module)
    return _objectives[stage]

# ------------------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Model:
    name: str
    constructor: str  # "module:callable", imported only when the model is built
    label: str
    fixed: tuple[tuple[str, object], ...] = ()  # constructor arguments that define the variant
    parts: tuple[tuple[str, str], ...] = ()  # composite: argument -> the models entry it is built from


MODELS: dict[str, Model] = {m.name: m for m in (
    Model("bagnet77_lowd", "saccader.models.bagnet:BagNet", "BagNet-77-lowD"),
    Model("bagnet77", "saccader.models.bagnet:BagNet", "BagNet-77", fixed=(("lowd_dim", None),)),
    Model("resnet_v2_50", "baselines.resnet_v2:ResNetV2", "ResNet-v2-50"),
    Model("saccader", "saccader.models.saccader:Saccader", "Saccader"),
    Model("saccader_no_attention", "saccader.models.saccader:Saccader", "Saccader, no attention network",
          fixed=(("attention", False),)),
    Model("dram", "baselines.dram:DRAM", "DRAM"),
    Model("nasnet_a_large", "baselines.nasnet:nasnet_a_large", "NASNet-A Large"),
    Model("saccader_nasnet", "saccader.models.saccader_nasnet:SaccaderNASNet", "Saccader-NASNet",
          parts=(("saccader", "saccader"), ("nasnet", "nasnet_a_large"))),
)}

# ------------------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    name: str
    label: str
    glimpses: str | None = None  # how its model picks glimpses: "saccader", "dram" or "engineered" (the policies)
    ablation: bool = False  # a Saccader ablation: its own trace (Fig Supp.3), left out of Figs 3 and 5
    order: float = 0.0  # trace order of an ablation


RUNS: dict[str, Run] = {r.name: r for r in (
    Run("saccader", "Saccader", glimpses="saccader"),
    Run("saccader_no_pretrain", "Saccader, no location pretraining", glimpses="saccader", ablation=True, order=100),
    Run("saccader_no_attention", "Saccader, no attention network", glimpses="saccader", ablation=True, order=110),
    Run("bagnet77_lowd", "BagNet-77-lowD", glimpses="engineered"),
    Run("bagnet77", "BagNet-77"),
    Run("dram", "DRAM", glimpses="dram"),
    Run("resnet_v2_50", "ResNet-v2-50"),
    Run("nasnet", "NASNet"),
    Run("nasnet_77", "NASNet-77"),
    Run("nasnet_113", "NASNet-113"),
)}

# Full-image references of Fig 3 (black markers), one marker shape each.
FULL_IMAGE: dict[str, str] = {"resnet_v2_50": "s", "bagnet77_lowd": "D", "bagnet77": "^", "nasnet": "P"}

EVALUATIONS: dict[str, dict[str, tuple[str, ...]]] = {
    # top-1, top-5, area vs T: every run whose model picks glimpses (the BagNet under every engineered policy)
    "glimpses": {r.name: (r.name,) for r in RUNS.values() if r.glimpses},
    "full_image": {name: (name,) for name in FULL_IMAGE},
    # ResNet-v2-50 with the glimpses of every policy occluded (Fig 5b): the classifier first, then the sources
    "occlusion": {"resnet_v2_50": ("resnet_v2_50", "bagnet77_lowd", "saccader", "dram")},
    # Saccader-NASNet (Fig 6): the Saccader picks, NASNet-77 / -113 classify
    "nasnet": {"saccader_nasnet": ("saccader", "nasnet_77", "nasnet_113")},
}
# Table Supp.6: run -> whether the attacked function picks glimpses (attack.num_glimpses of them)
ATTACKS: dict[str, bool] = {"saccader": True, "dram": True, "resnet_v2_50": False, "bagnet77_lowd": False}

# ------------------------------------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class Policy:
    name: str
    label: str
    order: float  # figure and table order (also the colour)
    run: str  # the run whose model the policy steers and whose logits classify its glimpses
    module: str | None = None  # where an engineered policy is implemented (imported only to run it)


_LEARNED = (Policy("saccader", "Saccader", 0, "saccader"), Policy("dram", "DRAM", 10, "dram"))
POLICY_FOLDER = Path(__file__).resolve().parents[1] / "baselines" / "policies"
_declared: dict[str, Policy] = {}  # engineered policies registered in this process (``policy``)
_functions: dict[str, Callable] = {}


def _decorator_name(node: ast.expr) -> str | None:
    target = node.func if isinstance(node, ast.Call) else node
    return target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)


def _read_declarations(path: Path, module: str) -> list[Policy]:
    """The ``@policy(name, label=..., order=...)`` decorators of one source file, read without running it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        for deco in getattr(node, "decorator_list", []):
            if isinstance(deco, ast.Call) and _decorator_name(deco) == "policy":
                args = [ast.literal_eval(a) for a in deco.args]
                kwargs = {k.arg: ast.literal_eval(k.value) for k in deco.keywords}
                found.append(_engineered(*args, module=module, **kwargs))
    return found


def _engineered(name: str, label: str, order: float, module: str | None = None) -> Policy:
    return Policy(name, f"{label} (BagNet-77-lowD)", order, "bagnet77_lowd", module)


@functools.cache
def _source_policies() -> tuple[Policy, ...]:
    found = []
    for path in sorted(POLICY_FOLDER.glob("*.py")):
        module = "baselines.policies" + ("" if path.stem == "__init__" else f".{path.stem}")
        found += _read_declarations(path, module)
    return tuple(found)


def policies() -> dict[str, Policy]:
    """Every glimpse policy, in figure order: the learned ones and each engineered one of ``baselines/policies/``
    (and any registered in this process)."""
    found = [*_LEARNED, *_source_policies()]
    found += [p for p in _declared.values() if p.name not in {f.name for f in found}]
    names = [p.name for p in found]
    if len(set(names)) != len(names):
        raise UserError(f"policy names declared twice: {sorted({n for n in names if names.count(n) > 1})}",
                        "give each @policy in baselines/policies/ its own name")
    return {p.name: p for p in sorted(found, key=lambda p: (p.order, p.name))}


def engineered_policies() -> list[str]:
    """Policies a config may list under ``evaluate.policies`` (they steer BagNet-77-lowD), in figure order."""
    return [p.name for p in policies().values() if p.run == "bagnet77_lowd"]


def policy(name: str, *, label: str, order: float) -> Callable:
    """Declare an engineered glimpse policy on its function ``fn(k, cells) -> (N, k)`` flat cell indices, distinct
    and ordered from the first glimpse (``baselines.policies.Cells``). ``label`` names it in the figures (the
    classifier is appended), ``order`` places it in them. In ``baselines/policies/`` the arguments must be
    literals: the catalog reads them from the source without importing torch."""
    def register(fn: Callable) -> Callable:
        _declared.setdefault(name, _engineered(name, label, order, getattr(fn, "__module__", None)))
        _functions[name] = fn
        return fn

    return register


def policy_function(name: str) -> Callable:
    """The implementation of engineered policy ``name`` (its module is imported on first use)."""
    if name not in _functions:
        entry = policies().get(name)
        if entry is None or entry.module is None:
            known("engineered policy", name, engineered_policies())
        importlib.import_module(entry.module)
    return _functions[name]


# ------------------------------------------------------------------------------------------------------- lookups


def known(what: str, name: str, names) -> str:
    """``name`` if it is one of ``names``, else a UserError naming them."""
    names = list(names)
    if name not in names:
        raise UserError(f"unknown {what} {name!r}", f"use one of {', '.join(names) or '(none)'}")
    return name


def traces() -> list[str]:
    """The curves of the figures in their order: the policies, then the Saccader ablations (own curves)."""
    ablations = sorted((r for r in RUNS.values() if r.ablation), key=lambda r: r.order)
    return [*policies(), *(r.name for r in ablations)]


def ablations() -> list[str]:
    return [name for name in traces() if name in RUNS and RUNS[name].ablation]


def label(name: str) -> str:
    """How figures and tables name a policy, run or model (the name itself if the catalog has no label)."""
    entry = policies().get(name) or RUNS.get(name) or MODELS.get(name)
    return entry.label if entry is not None else {"full_image": "full image"}.get(name, name)


def required_runs(kind: str, name: str) -> list[str]:
    """Training runs whose ``model.pt`` evaluation job (kind, name) loads."""
    if name not in EVALUATIONS.get(kind, {}):
        raise UserError(f"no evaluation job ({kind}, {name})",
                        f"use one of {', '.join(f'{k}/{m}' for k, ms in EVALUATIONS.items() for m in ms)}")
    return list(EVALUATIONS[kind][name])


def glimpse_source(run: str) -> str:
    """How the model of ``run`` picks glimpses: ``saccader``, ``dram`` or ``engineered``."""
    return RUNS[known("glimpse run", run, [r for r in RUNS if RUNS[r].glimpses])].glimpses


# The policy whose rows report an engineered-policy run's own test accuracy: the best engineered policy of Fig 3.
OWN_POLICY = {"saccader": "saccader", "dram": "dram", "engineered": "ordered_logits"}


def attacked_runs(model: str) -> list[str]:
    """Training runs whose ``model.pt`` the attack on ``model`` loads (each attacked model is its own run)."""
    return [known("attacked model", model, ATTACKS)]


def own_evaluations(run: str) -> list[tuple[str, str, str]]:
    """(kind, evaluated name, policy) of the evaluation jobs whose rows are ``run``'s own test accuracy: its
    glimpses at every T, its full image, or (NASNet-77 / -113) the Saccader-NASNet it classifies for. Empty for a
    run that only initialises others (pre-training stages)."""
    if run not in RUNS:
        return []
    out = [("glimpses", run, OWN_POLICY[RUNS[run].glimpses])] if RUNS[run].glimpses else []
    out += [("full_image", run, "full_image")] if run in FULL_IMAGE else []
    out += [("nasnet", name, "saccader") for name, runs in EVALUATIONS["nasnet"].items() if run in runs[1:]]
    return out

# ------------------------------------------------------------------------------------------------------- targets

# The results files the figures read, relative to the results folder (glob patterns over what the rules write).
RESULTS: dict[str, str] = {
    **{kind: f"eval/{kind}/*/seed*.parquet" for kind in EVALUATIONS},
    "examples": "eval/glimpses/*/seed*.parquet.examples.npz",
    "attack": "attack/*/seed*.parquet",
    "params": "params.parquet",
    "train_logs": "runs/*/seed*/train_log.parquet",
}


def images_path(out: str | os.PathLike) -> str:
    """The per-image outcomes beside a job's results ``.../seed<S>.parquet``: ``.../images_seed<S>.parquet`` (also
    on glob patterns; a name the results' ``seed*.parquet`` patterns do not match)."""
    head, name = os.path.split(os.fspath(out))
    return os.path.join(head, f"images_{name}")


@dataclass(frozen=True)
class Target:
    function: str  # "analysis.<module>:<function>", called by analysis.run as f(results_dir, out_dir, **options)
    inputs: tuple[str, ...]  # glob patterns relative to the results folder
    outputs: tuple[str, ...]  # paths relative to the output folder


def _figure(name: str) -> tuple[str, ...]:
    return (f"figures/{name}.png", f"figures/{name}.pdf")


def _table(name: str, folder: str = "tables/") -> tuple[str, ...]:
    return tuple(f"{folder}{name}.{ext}" for ext in ("csv", "md", "html"))


_GLIMPSES, _FULL, _OCCLUSION, _NASNET, _ATTACK = (RESULTS[k] for k in ("glimpses", "full_image", "occlusion",
                                                                       "nasnet", "attack"))
# Per-image outcomes beside each seed's results: the claims' intervals.
_IMAGES = tuple(images_path(p) for p in (_GLIMPSES, _NASNET, _ATTACK))

TARGETS: dict[str, Target] = {
    "fig3": Target("analysis.glimpses:fig3", (_GLIMPSES, _FULL), _figure("fig3")),
    "fig4": Target("analysis.pictures:fig4", (RESULTS["examples"],), _figure("fig4")),
    "fig5": Target("analysis.area:fig5", (_GLIMPSES, _OCCLUSION, _FULL), _figure("fig5")),
    "fig6": Target("analysis.glimpses:fig6", (_NASNET,), _figure("fig6")),
    "fig_supp1": Target("analysis.pictures:fig_supp1", (RESULTS["examples"],), _figure("fig_supp1")),
    "fig_supp2": Target("analysis.area:fig_supp2", (_GLIMPSES, _OCCLUSION, _FULL), _figure("fig_supp2")),
    "fig_supp3": Target("analysis.glimpses:fig_supp3", (_GLIMPSES,), _figure("fig_supp3")),
    "fig_learning": Target("analysis.learning:fig_learning", (RESULTS["train_logs"],), _figure("fig_learning")),
    "table_supp1": Target("analysis.tables:table_supp1", (RESULTS["params"],), _table("table_supp1")),
    "table_supp6": Target("analysis.tables:table_supp6", (_ATTACK,), _table("table_supp6")),
    "table_summary": Target("analysis.tables:table_summary", (_GLIMPSES, _NASNET, _FULL), _table("table_summary")),
    "table_plateau": Target("analysis.learning:table_plateau", (RESULTS["train_logs"],), _table("table_plateau")),
    "claims": Target("analysis.claims:claims", (_GLIMPSES, _OCCLUSION, _ATTACK, _NASNET, *_IMAGES),
                     _table("claims", folder="")),
}
TARGETS["results_md"] = Target("analysis.results_doc:results_md",
                               ("tables/table_summary.md", "claims.csv", "tables/table_plateau.csv", _GLIMPSES),
                               ("results.md", "run.json"))
# The index page shows every other target's outputs; it is listed last so `all` builds it last. It also lists the
# files under logs/ and each runs/*/seed*/train_log.parquet present when it is built (not inputs: logs change with
# every job, including this one).
TARGETS["index"] = Target("analysis.index:index", tuple(o for t in TARGETS.values() for o in t.outputs),
                          ("index.html",))
