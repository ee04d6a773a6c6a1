"""Experiment configuration: YAML files merged in order, validated against ``workflow/schemas/config.schema.yaml``.

``config.yaml`` is the paper-scale experiment; ``config/embedded.yaml``, ``config/smoke.yaml`` and
``config/mini-imagenet.yaml`` are overlays holding only their deviations from it. Files merge as Snakemake merges
``--configfile`` over the Snakefile's ``configfile: config.yaml`` (nested mappings recursively, anything else
replaced), so ``saccader train --config config.yaml --config config/embedded.yaml`` sees exactly the config of
``snakemake --configfile config/embedded.yaml``. Validation of the merged result fills schema defaults and turns the
first violation into one line naming the key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import yaml

from saccader.errors import UserError
from saccader.schema import first_problem

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
BASE = REPO / "config.yaml"  # the base every overlay deviates from (the Snakefile's configfile)


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _catalog_problem(config: dict) -> str | None:
    """The first name of the config that the experiment catalog does not know (a run's stage or model, an
    evaluated policy), as the schema's enum message: the catalog, not the schema, holds those vocabularies."""
    from saccader import catalog

    names = [(f"train.{run}.{key}", (rec or {}).get(key), allowed)
             for run, rec in (config.get("train") or {}).items()
             for key, allowed in (("stage", list(catalog.STAGES)), ("model", list(catalog.MODELS)))]
    names += [(f"evaluate.policies.{i}", name, catalog.engineered_policies())
              for i, name in enumerate((config.get("evaluate") or {}).get("policies") or [])]
    for where, name, allowed in names:
        if name is not None and name not in allowed:
            return f"config key {where} = {name!r} is not allowed; use one of {allowed}"
    return None


def validate(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place (defaults filled) and return it; raise ``UserError`` on the first problem."""
    if (problem := first_problem(load_schema(), config)) is not None:
        raise UserError(f"{source}: {problem}")
    if (problem := _catalog_problem(config)) is not None:
        raise UserError(f"{source}: {problem}")
    return config


def merge(base: dict, overlay: Mapping) -> dict:
    """``overlay`` merged into ``base`` in place: mappings recursively, other values (lists too) replaced. The rule
    of ``snakemake.utils.update_config``, written out so that a job need not import Snakemake (tests compare both)."""
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def read(path: str | Path) -> dict:
    """The mapping in one YAML file (not validated: it may be an overlay)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist",
                        "pass --config config.yaml (paper scale), or config.yaml followed by an overlay such as "
                        "--config config/embedded.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {path} is not a text file (byte {exc.start} is not UTF-8)",
                        "pass a YAML config such as config.yaml; `saccader init-config` writes one for a folder "
                        "of images") from None
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} holds a {type(data).__name__}, not a mapping of config keys")
    return data


def load(paths: str | Path | Sequence[str | Path]) -> dict:
    """Read the config files ``paths`` (one, or several merged in order), validate and return the result."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    config: dict = {}
    for path in paths:
        merge(config, read(path))
    names = " + ".join(map(str, paths))
    try:
        return validate(config, names)
    except UserError as exc:
        if any(Path(p).resolve() == BASE for p in paths):
            raise
        # An overlay alone lacks keys that config.yaml holds (each shipped overlay fails validation alone).
        raise UserError(str(exc), f"if {paths[-1]} is an overlay on config.yaml, pass --config config.yaml "
                                  f"--config {paths[-1]} (files merge in order, as Snakemake's --configfile)") from None


def load_experiment(path: str | Path) -> dict:
    """The config of one experiment file as Snakemake builds it: ``config.yaml`` alone, or ``config.yaml`` merged
    with the overlay ``path`` (``snakemake --configfile path``)."""
    path = Path(path)
    return load([BASE] if path.resolve() == BASE else [BASE, path])


# The per-rule resources a Snakemake profile may set (`set-resources` in slurm/config.yaml), declared once: the
# launcher's flags (workflow/rules/common.smk launch()), the execution facts of training (nodes, micro_batch) and of
# any GPU rule (gpu_name, read by `saccader plan`), and Snakemake's standard resources. None is an experiment fact,
# so none enters a fingerprint or digest.
PROFILE_RESOURCES = frozenset({
    "submitit_cluster", "slurm_partition", "slurm_account", "gpu", "cpus_per_task", "mem_mb", "runtime",
    "nodes", "micro_batch", "gpu_name",
    "mem", "mem_mib", "disk", "disk_mb", "disk_mib", "tmpdir",
})


# The least value of each numeric resource: a job needs a node, a CPU, memory and time; 0 GPUs and micro_batch 0
# (no accumulation) mean something.
RESOURCE_MINIMUM = {"nodes": 1, "gpu": 0, "cpus_per_task": 1, "mem_mb": 1, "runtime": 1, "micro_batch": 0,
                    "mem_mib": 1, "disk_mb": 1, "disk_mib": 1}


def _resource_problem(key: str, value) -> str | None:
    """Why ``value`` of numeric resource ``key`` is not a whole number at or above its minimum, or None."""
    if key not in RESOURCE_MINIMUM:
        return None
    try:
        number = int(str(value).strip()) if not isinstance(value, (bool, float)) else None
    except ValueError:
        number = None
    if number is None:
        return f"{key}: {value!r} is not a whole number"
    if number < RESOURCE_MINIMUM[key]:
        return f"{key}: {number} is below its least value {RESOURCE_MINIMUM[key]}"
    return None


def check_profile_resources(set_resources: Mapping[str, Mapping], rules: Sequence[str] | None = None) -> None:
    """Raise ``UserError`` for a resource key of a profile's ``set-resources`` that no rule reads (a typo would
    otherwise be ignored and the job submitted with the default), a numeric resource out of range (``gpu: -8``
    would run on one GPU, ``nodes: 0`` on none), or for a rule that does not exist."""
    import difflib

    if not isinstance(set_resources, Mapping) or not all(isinstance(r, Mapping) for r in set_resources.values()):
        raise UserError("profile set-resources is not a mapping of rule -> {resource: value}",
                        "write it as in slurm/config.yaml")
    for rule, resources in set_resources.items():
        for key, value in resources.items():
            if (problem := _resource_problem(key, value)) is not None:
                raise UserError(f"profile set-resources of rule {rule}: {problem}",
                                f"set {key} to a whole number >= {RESOURCE_MINIMUM[key]} under set-resources: "
                                f"{rule}:")
        if rules is not None and rule not in rules:
            near = difflib.get_close_matches(rule, rules, n=1)
            raise UserError(f"profile set-resources names rule {rule!r}, which the workflow does not have",
                            f"rename it to {near[0]!r}" if near else f"use one of {', '.join(sorted(rules))}")
        for key in resources:
            if key not in PROFILE_RESOURCES:
                near = difflib.get_close_matches(key, PROFILE_RESOURCES, n=1)
                raise UserError(f"profile set-resources of rule {rule}: unknown resource {key!r}",
                                (f"rename it to {near[0]!r}; " if near else "")
                                + f"known resources: {', '.join(sorted(PROFILE_RESOURCES))}")


def check_dataset_root(config: dict) -> str | None:
    """The problem with ``dataset.root`` of a dataset the user provides (not one the workflow generates), if any."""
    ds = config["dataset"]
    if ds["name"] == "digits" or Path(ds["root"]).is_dir():
        return None
    return str(UserError(f"dataset.root = {ds['root']} does not exist",
                         "set dataset.root in config.yaml (or --config \"dataset={root: DIR}\") to the folder "
                         "holding train/<wnid>/ and val/<wnid>/"))


def cluster_tools_problem(set_resources: Mapping[str, Mapping]) -> str | None:
    """Why the profile cannot send its jobs to SLURM from this machine (no SLURM client: submitit needs ``sbatch`` and
    ``srun`` on PATH, and would fail only at the first heavy job, with a traceback), with the fix; or None."""
    import shutil

    slurm = sorted(rule for rule, res in set_resources.items() if res.get("submitit_cluster") == "slurm")
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if not (slurm and missing):
        return None
    return str(UserError(f"the profile submits jobs to SLURM (rules {', '.join(slurm)}), but {' and '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not on PATH here",
                         "start Snakemake on a SLURM login node, or run locally without --profile slurm "
                         "(e.g. snakemake --cores 2 --configfile config/embedded.yaml)"))


def check_cluster_tools(set_resources: Mapping[str, Mapping]) -> None:
    """Raise ``UserError`` when the profile sends jobs to SLURM but this machine has no SLURM client."""
    if (problem := cluster_tools_problem(set_resources)) is not None:
        raise UserError(problem)


# --------------------------------------------------------------------------------------------- the results folder
# The folders a results_dir may never be: the experiment writes, replaces and (make-dataset) deletes files there.
_NEVER = {"the file system root": Path("/"), "your home folder": Path.home(), "the repository": REPO}
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # what a killed atomic write left (saccader.pipeline.io)


class _Plain(yaml.SafeDumper):
    """Equal configs give equal text: no anchors for lists that Snakemake's merge happens to share."""

    def ignore_aliases(self, data) -> bool:
        return True


def run_config(config: dict) -> tuple[str, str]:
    """(path, text) of the content-addressed copy of the resolved config that the workflow's jobs read:
    ``results_dir/configs/<sha256 of the text>.yaml``. Never rewritten with other content, so no invocation can
    change what a running job reads."""
    text = yaml.dump(config, Dumper=_Plain, sort_keys=True)
    name = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{config['results_dir'].rstrip('/')}/configs/{name}.yaml", text


def check_results_dir(results_dir: str | Path, entries: Iterable[str] | None = None) -> Path:
    """Raise ``UserError`` unless ``results_dir`` is a folder the experiment may own: not the file system root, the
    home folder, the repository, the working directory or a folder holding one of them; and missing, empty, marked
    by an earlier run (its lock file, saccader.pipeline.snakelock.RESULTS_LOCK) or holding only ``entries`` (the
    top-level names the workflow writes; None: where it is, not what it holds). Reads only. Returns the resolved
    folder."""
    from saccader.pipeline.snakelock import RESULTS_LOCK

    folder = Path(results_dir).resolve()
    for what, path in {**_NEVER, "the working directory": Path.cwd()}.items():
        path = path.resolve()
        if folder == path or path.is_relative_to(folder):
            raise UserError(f"results_dir {results_dir} is {what}" if folder == path else
                            f"results_dir {results_dir} holds {what} ({path})",
                            "set results_dir to a folder of its own, e.g. results_dir: results/my-experiment")
    if entries is None or not folder.exists() or (folder / RESULTS_LOCK).is_file():
        return folder
    if not folder.is_dir():
        raise UserError(f"results_dir {results_dir} is a file", "set results_dir to a folder")
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in entries and not _TEMPORARY.fullmatch(p.name))
    if foreign:
        raise UserError(f"results_dir {results_dir} holds files this workflow did not write ({', '.join(foreign[:3])}"
                        f"{', ...' if len(foreign) > 3 else ''})",
                        "set results_dir to a new or empty folder, or move those files away")
    return folder


def parse_run_dirs(items: list[str] | None, flag: str) -> dict[str, Path]:
    """``RUN=DIR`` arguments (``--init`` of train, ``--ckpt`` of evaluate/attack) -> {run: DIR}."""
    out = {}
    for item in items or []:
        run, sep, path = item.partition("=")
        if not sep or not run or not path:
            raise UserError(f"{flag} {item!r} is not RUN=DIR",
                            f"write e.g. {flag} bagnet77_lowd=results/runs/bagnet77_lowd/seed0")
        out[run] = Path(path)
    return out


def add_config_argument(parser) -> None:
    parser.add_argument("--config", required=True, action="append", metavar="YAML",
                        help="experiment config; repeat to merge overlays in order, as Snakemake's --configfile: "
                             "--config config.yaml --config config/embedded.yaml")


# ----------------------------------------------------------------------------------------- runs and execution keys
# Which keys of a config say how something executes, never what it computes, decided here for every hash of a config:
# the dataset's LOADING_KEYS say how images are loaded, never which; RUN_EXECUTION_KEYS (with them and the dataset's
# root) never change the weights a run ends with, so a checkpoint stays resumable when one changes
# (fingerprint). The workflow's job digests (workflow/rules/common.smk) leave out the
# LOADING_KEYS only: a new dataset folder or a new recipe value reruns the job. results.config_hash keeps the whole
# config: it
# records where a result came from.
LOADING_KEYS = ("num_workers", "cache_images")
RUN_EXECUTION_KEYS = frozenset({"checkpoint_every", "eval_every", "eval_batch_size", "paper_lr", "paper_batch_size",
                                "root", *LOADING_KEYS})


def digest(part: Mapping, leave_out=(), length: int = 16) -> str:
    """Short sha256 of ``part`` as sorted JSON, with the keys ``leave_out`` removed from each mapping it holds."""
    part = {k: {kk: vv for kk, vv in v.items() if kk not in leave_out} if isinstance(v, Mapping) else v
            for k, v in part.items()}
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:length]


def job_digest(config: dict, *sections: str, **extra) -> str:
    """The workflow's rerun trigger of a job: a digest of the config ``sections`` it depends on and ``extra`` (a
    recipe), without the LOADING_KEYS."""
    return digest({**{k: config.get(k) for k in sections}, **extra}, LOADING_KEYS)


def recipe(config: dict, run: str) -> dict:
    """The ``train.<run>`` recipe of ``config``; an unknown run is a UserError listing the known ones."""
    runs = config.get("train") or {}
    if run not in runs:
        raise UserError(f"unknown training run {run!r}", f"use one of {', '.join(sorted(runs)) or '(none configured)'}")
    return runs[run]


def train_recipe(config: dict, run: str) -> dict:
    """The recipe ``run`` trains with: ``train.<run>`` plus ``base_size``, the "224" resolution its objective
    resizes to (the Saccader's patches, eq 7)."""
    return {**recipe(config, run), "base_size": config["dataset"]["image_size"]}


def resolution(config: dict, rec: dict) -> int:
    """The input resolution of a recipe: ``high_res_size`` ("331") for ``resolution: high_res``, else ``image_size``."""
    return config["dataset"]["high_res_size" if rec.get("resolution") == "high_res" else "image_size"]


def fingerprint(config: dict, run: str) -> str:
    """Hash of what decides the weights of ``run``: its recipe, the ``models`` and ``dataset`` sections (execution
    settings left out: ``RUN_EXECUTION_KEYS``). Stored in the checkpoint and the card, so that a resume never mixes
    two configs."""
    part = {"run": run, "recipe": recipe(config, run), "models": config.get("models") or {},
            "dataset": config["dataset"]}
    return digest(part, RUN_EXECUTION_KEYS)


def init_runs(run: str, config: dict) -> list[str]:
    """The runs whose final weights ``run`` starts from (the workflow's DAG edges)."""
    return list(recipe(config, run).get("init_from", []))


def split_problem(batch: int, world: int, micro_batch: int = 0) -> tuple[str, str] | None:
    """Why the global ``batch`` cannot be cut over ``world`` ranks and micro-batches of ``micro_batch`` images (the
    problem and its fix), or None. Also what the workflow checks before it submits a job."""
    if micro_batch < 0:
        return f"micro-batch {micro_batch} is negative", "use 0 (no accumulation) or a positive number of images"
    if batch % world:
        return (f"batch_size = {batch} does not divide among {world} processes (nodes x GPUs)",
                "use a number of nodes x GPUs that divides the global batch (the batch is the paper's)")
    share = batch // world
    if micro_batch and share % micro_batch:
        return (f"micro-batch {micro_batch} does not divide the {share} images of each of the {world} processes "
                f"(batch_size {batch})", f"use a micro-batch that divides {share} (or 0 for no accumulation)")
    return None


def check_layout(config: dict, resources: dict) -> None:
    """Every run's global batch cuts into the ``train`` rule's profile resources ``nodes`` x ``gpu`` tasks and
    ``micro_batch`` images (values or ``snakemake.resources.Resource``); else a UserError naming the run, the numbers
    and the fix. The workflow calls it while parsing, before any job is submitted."""
    value = lambda key: int(getattr(resources[key], "value", resources[key]))  # noqa: E731
    nodes, gpus, micro = value("nodes"), value("gpu"), value("micro_batch")
    where = f"profile resources of rule train: nodes={nodes}, gpu={gpus}, micro_batch={micro}"
    if nodes < 1:
        raise UserError(f"{where}: nodes must be at least 1", "set nodes to 1 or more under set-resources: train:")
    for run, rec in sorted((config.get("train") or {}).items()):
        problem = split_problem(rec["batch_size"], nodes * max(1, gpus), micro)
        if problem:
            raise UserError(f"rule train, run {run}: {problem[0]} ({where})",
                            f"{problem[1]}: under set-resources: train: in the profile")
