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
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from saccader.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
BASE = REPO / "config.yaml"  # the base every overlay deviates from (the Snakefile's configfile)


def _with_defaults(cls):
    """A validator class that also writes each property's ``default`` into the instance (jsonschema FAQ)."""
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_Validator = _with_defaults(Draft202012Validator)


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _describe(error) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return f"unknown config key {where + '.' if error.absolute_path else ''}{unknown[0]}; allowed keys here: " \
               f"{', '.join(allowed)}"
    if error.validator == "enum":
        return f"config key {where} = {error.instance!r} is not allowed; use one of {error.validator_value}"
    if error.validator == "type":
        return f"config key {where} = {error.instance!r} has the wrong type; expected {error.validator_value}"
    if error.validator == "required":
        return f"config key {where} is missing {error.message.split()[0]}; add it (see config.yaml for an example)"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bound = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[error.validator]
        return f"config key {where} = {error.instance!r} is out of range; fix: set it {bound} {error.validator_value}"
    if error.validator == "uniqueItems":
        return f"config key {where} has repeated values {error.instance}; each must be unique"
    return f"config key {where} = {error.instance!r} is invalid: {error.message}"


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
    errors = sorted(_Validator(load_schema()).iter_errors(config), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise UserError(f"{source}: {_describe(errors[0])}")
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
        data = yaml.safe_load(path.read_text()) or {}
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
# launcher's flags (workflow/rules/common.smk LAUNCH), the execution facts of training (nodes, micro_batch) and of
# any GPU rule (gpu_name, read by `saccader plan`), and Snakemake's standard resources. None is an experiment fact,
# so none enters a fingerprint or digest.
PROFILE_RESOURCES = frozenset({
    "submitit_cluster", "slurm_partition", "slurm_account", "gpu", "cpus_per_task", "mem_mb", "runtime",
    "nodes", "micro_batch", "gpu_name",
    "mem", "mem_mib", "disk", "disk_mb", "disk_mib", "tmpdir",
})


def check_profile_resources(set_resources: Mapping[str, Mapping], rules: Sequence[str] | None = None) -> None:
    """Raise ``UserError`` for a resource key of a profile's ``set-resources`` that no rule reads (a typo would
    otherwise be ignored and the job submitted with the default), or for a rule that does not exist."""
    import difflib

    for rule, resources in set_resources.items():
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


def check_cluster_tools(set_resources: Mapping[str, Mapping]) -> None:
    """Raise ``UserError`` when the profile sends jobs to SLURM but this machine has no SLURM client: submitit needs
    ``sbatch`` and ``srun`` on PATH, and would fail only at the first heavy job, with a traceback."""
    import shutil

    slurm = sorted(rule for rule, res in set_resources.items() if res.get("submitit_cluster") == "slurm")
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if slurm and missing:
        raise UserError(f"the profile submits jobs to SLURM (rules {', '.join(slurm)}), but {' and '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not on PATH here",
                        "start Snakemake on a SLURM login node, or run locally without --profile slurm "
                        "(e.g. snakemake --cores 2 --configfile config/embedded.yaml)")


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
