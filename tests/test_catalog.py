"""The experiment catalog (saccader/catalog.py): the one place for names, read without torch, and a policy that is
one function and one config line reaches the evaluation, the figures and the tables with no other edit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from saccader import catalog

from saccader.pipeline import evaluate
from saccader.pipeline.config import load_experiment, validate
from saccader.errors import UserError
from test_evaluate import tiny_setup  # noqa: F401 (a fixture: tiny dataset, tiny models of every run)

ROOT = Path(__file__).resolve().parents[1]


def test_the_catalog_and_the_analysis_import_no_torch():
    code = ("import sys, saccader.catalog as c, saccader.pipeline.config, saccader.pipeline.results, analysis.common,"
            " analysis.glimpses, analysis.area, analysis.tables, analysis.pictures, analysis.claims, analysis.index; "
            "c.policies(); c.label('center'); torch = sorted(m for m in sys.modules if m.split('.')[0] == 'torch'); "
            "assert not torch, torch")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_dry_run_parses_the_workflow_without_torch(tmp_path):
    """A torch that fails on import shadows the real one: the dry-run must not need it."""
    poison = tmp_path / "poison" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('torch imported while Snakemake parses the workflow')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(poison.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "snakemake", "all", "-n", "--nolock", "--configfile", "config/smoke.yaml",
           "--config", f"results_dir={tmp_path / 'results'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Job stats" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]


def test_policies_come_from_their_files_in_figure_order():
    policies = catalog.policies()
    assert list(policies)[:2] == ["saccader", "dram"]
    assert catalog.engineered_policies() == ["ordered_logits", "random", "sobel_mean", "sobel_var", "center"]
    assert policies["center"].module == "baselines.policies.center" and policies["center"].run == "bagnet77_lowd"
    assert catalog.traces() == [*policies, "saccader_no_pretrain", "saccader_no_attention"]
    assert catalog.label("sobel_var") == "Sobel variance (BagNet-77-lowD)"
    # every shipped config evaluates only policies the catalog knows, and the paper config evaluates them all
    assert load_experiment("config.yaml")["evaluate"]["policies"] == [
        "random", "ordered_logits", "sobel_mean", "sobel_var", "center"]


def test_unknown_names_are_errors_naming_the_known_ones():
    with pytest.raises(UserError, match="unknown engineered policy 'nope'; fix: use one of .*center"):
        catalog.policy_function("nope")
    with pytest.raises(UserError, match=r"no evaluation job \(glimpses, bagnet77\).*glimpses/dram"):
        catalog.required_runs("glimpses", "bagnet77")
    with pytest.raises(UserError, match="unknown glimpse run 'resnet_v2_50'.*bagnet77_lowd"):
        evaluate.policy_outputs({"resnet_v2_50": None}, torch.zeros(1, 3, 8, 8), 1, [], None, 8)
    config = load_experiment("config/smoke.yaml")
    config["train"]["dram"]["stage"] = "reinforcement"
    with pytest.raises(UserError, match=r"train.dram.stage = 'reinforcement' is not allowed; use one of .*'dram'"):
        validate(config)


def test_every_evaluation_kind_of_the_catalog_has_a_job_body():
    assert set(evaluate.KINDS) == set(catalog.EVALUATIONS)


def _corners_first(k, cells):
    """The four corners, then the other cells row by row."""
    h, w = cells.grid
    corners = [0, w - 1, (h - 1) * w, h * w - 1]
    order = corners + [c for c in range(h * w) if c not in corners]
    return torch.tensor(order[:k], device=cells.logits2d.device).repeat(len(cells.logits2d), 1)


@pytest.fixture
def corners_first():
    """Policy ``corners_first``, registered for the test only."""
    catalog.policy("corners_first", label="Corners first", order=25)(_corners_first)
    yield
    catalog._declared.pop("corners_first")
    catalog._functions.pop("corners_first")


def test_a_policy_defined_here_reaches_the_evaluation_figures_and_table(corners_first, tiny_setup, tmp_path):
    from analysis import area, glimpses, tables

    config, ckpts, _ = tiny_setup
    config["evaluate"]["policies"] = [*config["evaluate"]["policies"], "corners_first"]  # the one config line
    smoke = load_experiment("config/smoke.yaml")
    smoke["evaluate"]["policies"].append("corners_first")
    validate(smoke)  # a config may name it
    results = tmp_path / "results"
    for kind, model in (("glimpses", "bagnet77_lowd"), ("glimpses", "saccader"), ("glimpses", "dram"),
                        ("occlusion", "resnet_v2_50")):
        evaluate.evaluate(config, kind, model, 0, ckpts, results / f"eval/{kind}/{model}/seed0.parquet")
    frame = pd.read_parquet(results / "eval/glimpses/bagnet77_lowd/seed0.parquet")
    picked = frame[(frame.policy == "corners_first") & (frame.metric == "area") & (frame.num_glimpses == 1)]
    assert picked["value"].item() == 81 / 256  # one 9 x 9 receptive field of the 16 x 16 image

    name = "Corners first (BagNet-77-lowD)"
    for figure in (glimpses.plot_fig3(results, train_glimpses=2), area.plot_fig5(results)):
        shown = [t.get_text() for t in figure.legends[0].get_texts()]
        # in the catalog's order: after ordered logits (order 20), before random (30)
        assert shown.index("Ordered logits (BagNet-77-lowD)") < shown.index(name) < shown.index(
            "Random (BagNet-77-lowD)"), shown
    tables.table_summary(results, tmp_path / "out", train_glimpses=2)
    summary = pd.read_csv(tmp_path / "out" / "tables" / "table_summary.csv")
    assert list(summary.loc[summary.experiment == "glimpses", "policy"]) == [
        "saccader", "dram", "ordered_logits", "corners_first", "random", "sobel_mean", "sobel_var", "center"]


def _imports(path: Path) -> list[tuple[str, str]]:
    """(imported module, enclosing function or '') of every import statement of a source file."""
    import ast

    found = []

    def visit(node, where):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            if isinstance(child, ast.Import):
                found.extend((a.name, where) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                found.extend([(child.module, where)] + [(f"{child.module}.{a.name}", where) for a in child.names])
            visit(child, name)

    visit(ast.parse(path.read_text()), "")
    return found


def test_baselines_depend_on_the_method_and_never_the_reverse():
    """The method (saccader/ outside saccader/pipeline/, but for ``python -m saccader``) imports neither baselines nor
    the pipeline; baselines import the method, never the pipeline."""
    method = [p for p in (ROOT / "saccader").rglob("*.py") if "pipeline" not in p.parts and p.name != "__main__.py"]
    bad = [f"{p.relative_to(ROOT)}: {m}" for p in method for m, where in _imports(p)
           if m.startswith(("baselines", "saccader.pipeline"))]
    bad += [f"{p.relative_to(ROOT)}: {m}" for p in (ROOT / "baselines").rglob("*.py") for m, _ in _imports(p)
            if m.startswith("saccader.pipeline")]
    assert not bad, bad
