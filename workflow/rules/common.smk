# Config resolution and the path / argument helpers of every rule. The experiment's structure (runs, their
# initialisations, evaluation jobs, attacked models, figures) comes from the package itself, so the DAG and the
# code cannot disagree: saccader.pipeline.config.init_runs, saccader.catalog.EVALUATIONS / required_runs,
# saccader.catalog.ATTACKS and TARGETS. Nothing imported here imports torch (tests/test_catalog.py).
# Parsing only declares: nothing is written, no environment changes (a dry run, --lint and --report write nothing).
# What a run needs written or set happens in onstart:, under Snakemake's lock, once jobs will run. The one exception
# is release_stale_locks below, which removes the lock files of a killed Snakemake (and writes nothing when there
# are none): Snakemake takes its lock after parsing and before onstart:.
import fnmatch
import functools
import os
import sys
from pathlib import Path

from snakemake.logging import logger

from saccader import catalog
from saccader.pipeline import io as sio
from saccader.errors import UserError
from saccader.pipeline.config import (check_cluster_tools, check_dataset_root, check_profile_resources,
                                      check_results_dir, cluster_tools_problem, init_runs as _init_runs, job_digest,
                                      run_config, validate)
from saccader.catalog import images_path
from saccader.pipeline.snakelock import (OWNER, RESULTS_LOCK, lock_results_dir, owner_value, register_invocation,
                                         release_stale_locks)

# A Snakemake killed with SIGKILL leaves its locks: release them when no other invocation runs, so that rerunning
# the same command resumes the run (saccader/pipeline/snakelock.py).
release_stale_locks(".snakemake", log=logger.warning)

# config.yaml (the Snakefile's configfile) is the base; each --configfile (config/embedded.yaml, ...) is an overlay
# holding only its deviations, merged over it by Snakemake, then --config. The merged result is what is validated,
# copied to results_dir/configs/ for the jobs, and hashed by digest().
validate(config, " + ".join(["snakemake config: config.yaml", *map(str, workflow.config_settings.configfiles)]))

# Bad input stops Snakemake before any job is submitted, in one line (saccader.errors.UserError): a profile resource
# with a typo and a results_dir the experiment cannot own here at parse time; a missing dataset.root and a SLURM
# profile on a machine without SLURM when the run starts (onstart: a dry run, --lint or --report submits nothing
# and only gets the warning line).
SET_RESOURCES = {rule: {key: getattr(value, "raw", value) for key, value in res.items()}
                 for rule, res in workflow.resource_settings.overwrite_resources.items()}
check_profile_resources(SET_RESOURCES)
if (_root_problem := check_dataset_root(config)) is not None:
    print(f"warning: {_root_problem}", file=sys.stderr)
if (_slurm_problem := cluster_tools_problem(SET_RESOURCES)) is not None:
    print(f"warning: {_slurm_problem}", file=sys.stderr)


def check_before_submitting():
    """The checks a dry run skips: called first thing in onstart."""
    if (problem := check_dataset_root(config)) is not None:
        raise UserError(problem)
    check_cluster_tools(SET_RESOURCES)


def check_workflow():
    """Refuse set-resources naming no rule of the workflow, and a results_dir holding anything but what the rules
    write (saccader.pipeline.config.check_results_dir). The Snakefile calls it after its includes."""
    check_profile_resources(SET_RESOURCES, [rule.name for rule in workflow.rules])
    written = {RESULTS_LOCK, "configs", "config.yaml", "report.html"}  # report.html: `snakemake --report`
    for job in workflow.rules:
        for path in [*job.output, *job.log, *([job.benchmark] if job.benchmark else [])]:
            first = os.path.relpath(str(path), R).split(os.sep)[0]
            if first != ".." and "{" not in first:
                written.add(first)
    check_results_dir(R, written)


R = config["results_dir"].rstrip(os.sep) or os.sep
check_results_dir(R)  # not /, the home folder, the repository ... (what it holds: check_workflow)
ENV = "../../environment.yml"  # the same software as a conda environment (for --software-deployment-method conda)
CONFIG = f"{R}/config.yaml"  # the config of the latest invocation that ran jobs, for reading: no job reads it
DIGITS = config["dataset"]["name"] == "digits"
SEEDS = [str(s) for s in config["seeds"]]
RUNS = sorted(config["train"])
# Jobs read a content-addressed copy of the resolved config, passed as a resource (`--config
# {resources.run_config}`): no invocation can rewrite a file that a running job reads, not even one that
# Snakemake's lock refuses (the lock only covers the files of the jobs it would run, and is taken after parsing).
# A resource, not a param, so that a change of the execution settings alone reruns no job.
RUN_CONFIG, RUN_CONFIG_TEXT = run_config(config)


onstart:
    check_before_submitting()
    # One run at a time on this results_dir, from any checkout or user (a kernel lock held until this process ends).
    lock_results_dir(R)
    register_invocation(".snakemake")
    # Jobs run with the interpreter that runs Snakemake (the project's venv), also when the venv is not activated,
    # and end once this Snakemake is gone, so that a rerun's copy of a job is the only one.
    os.environ.update(PATH=os.pathsep.join([os.path.dirname(sys.executable), os.getenv("PATH", "")]))
    os.environ[OWNER] = owner_value()
    if not os.path.isfile(RUN_CONFIG):
        sio.write_text(RUN_CONFIG, RUN_CONFIG_TEXT)
    # The readable copy of what this invocation runs with.
    if not os.path.isfile(CONFIG) or open(CONFIG).read() != RUN_CONFIG_TEXT:
        sio.write_text(CONFIG, RUN_CONFIG_TEXT)


wildcard_constraints:
    run="|".join(RUNS) or "no-run",
    seed=r"\d+",


def digest(*keys, **extra):
    """Short hash of the config sections a job depends on: a rule param, so that Snakemake reruns exactly the jobs
    whose part of the config changed (rerun trigger 'params') and no others. Execution settings (data-loader
    workers, the image cache, the executor section, resources) are left out: they never change a result."""
    return job_digest(config, *keys, **extra)


def run_dir(run, seed):
    return f"{R}/runs/{run}/seed{seed}"


def model_pt(run, seed):
    return f"{run_dir(run, seed)}/model.pt"


def ckpt_args(runs, seed, flag="--ckpt"):
    """['--ckpt', 'RUN=DIR', ...] for the runs a job loads."""
    return [a for run in runs for a in (flag, f"{run}={run_dir(run, seed)}")]


def init_runs(run):
    return _init_runs(run, config)


def eval_jobs():
    return catalog.EVALUATIONS


def eval_runs(kind, model):
    return catalog.required_runs(kind, model)


def attack_models():
    return list(catalog.ATTACKS)


def attack_runs(model):
    return [catalog.known("attacked model", model, catalog.ATTACKS)]


def eval_parquet(kind, model, seed):
    """The results of evaluation job (kind, model) for one seed, relative to R (the evaluate rules' output)."""
    return f"eval/{kind}/{model}/seed{seed}.parquet"


def data_outputs():
    """Results the analysis may read, relative to R: evaluations, attacks, training logs, parameter table."""
    files = [eval_parquet(k, m, s) for k, ms in eval_jobs().items() for m in ms for s in SEEDS]
    files += [f"{eval_parquet('glimpses', m, s)}.examples.npz" for m in eval_jobs()["glimpses"] for s in SEEDS]
    files += [f"attack/{m}/seed{s}.parquet" for m in attack_models() for s in SEEDS]
    files += [images_path(f) for f in list(files) if f.endswith(".parquet")]
    files += [f"runs/{r}/seed{s}/train_log.parquet" for r in RUNS for s in SEEDS]
    return files + ["params.parquet"]


def all_outputs():
    """Every figure, table and page, every run of every seed (a run no figure reads is still trained), and the model
    bundle of every evaluated run."""
    runs = [model_pt(run, seed) for run in RUNS for seed in SEEDS]
    bundles = [f"{bundle_dir(run, seed)}/card.json" for run in exported_runs() for seed in SEEDS]
    return runs + bundles + [f"{R}/{o}" for t in catalog.TARGETS.values() for o in t.outputs]


# ------------------------------------------------------------------------------------------------- model bundles


def exported_runs():
    """Runs that evaluation jobs report on (saccader.catalog.own_evaluations): each gets a bundle with its test
    accuracy under R/models/."""
    return [run for run in RUNS if catalog.own_evaluations(run)]


def bundle_dir(run, seed):
    return f"{R}/models/{run}/seed{seed}"


def export_inputs(wildcards):
    return [f"{R}/{eval_parquet(kind, name, wildcards.seed)}"
            for kind, name, _ in catalog.own_evaluations(wildcards.run)]


def launch(launcher=(), job=()):
    """The shell command of a heavy rule: saccader.pipeline.launch with the rule's resources as its flags (set per
    rule in the profiles, the rules hold local defaults; resources, not params, so that moving a run between clusters
    never makes Snakemake rerun it) and ``launcher`` before --gpus, then the job's ``params.args``, ``job`` and the
    run's config. One argument per item; every value a Snakemake placeholder, quoted unless a profile's integer."""
    command = ["python", "-m", "saccader.pipeline.launch", "--folder", "{params.folder:q}",
               "--cluster", "{resources.submitit_cluster:q}", "--partition={resources.slurm_partition:q}",
               "--account={resources.slurm_account:q}", *launcher, "--gpus", "{resources.gpu}",
               "--cpus", "{resources.cpus_per_task}", "--mem-mb", "{resources.mem_mb}",
               "--time-min", "{resources.runtime}",
               "--", "{params.args:q}", *job, "--config", "{resources.run_config:q}"]
    return " ".join(command) + " > {log:q} 2>&1"


HEAVY_RESOURCES = dict(submitit_cluster="local", slurm_partition="", slurm_account="", gpu=0, cpus_per_task=1,
                       mem_mb=4000, runtime=24 * 60, run_config=RUN_CONFIG)


# ----------------------------------------------------------------------------------------------------- training


@functools.cache
def chain_length(run):
    """The longest chain of runs that start from ``run`` (DRAM pre-training 2, BagNet-77-lowD 3, ...)."""
    return max((1 + chain_length(r) for r in RUNS if run in init_runs(r)), default=0)


def train_priority(wildcards):
    """Snakemake starts the ready jobs of highest priority first: long chains first, so that they do not end the
    run on one busy core."""
    return chain_length(wildcards.run)


def train_inputs(wildcards):
    return [model_pt(run, wildcards.seed) for run in init_runs(wildcards.run)]


def train_args(wildcards):
    out = run_dir(wildcards.run, wildcards.seed)
    # Snakemake reruns a job whose recipe changed (params digest); its old checkpoint is then stale, not resumable.
    args = ["train", "--run", wildcards.run, "--seed", wildcards.seed, "--out", out,
            "--stale-checkpoint", "restart"]
    return args + ckpt_args(init_runs(wildcards.run), wildcards.seed, flag="--init")


# ----------------------------------------------------------------------------------------------------- evaluation


def eval_inputs(wildcards):
    return [model_pt(run, wildcards.seed) for run in eval_runs(wildcards.kind, wildcards.model)]


def eval_args(wildcards, output):
    runs = eval_runs(wildcards.kind, wildcards.model)
    args = ["evaluate", "--kind", wildcards.kind, "--model", wildcards.model]
    return args + ["--seed", wildcards.seed, "--out", output[0]] + ckpt_args(runs, wildcards.seed)


def eval_params(rule):
    return dict(
        args=eval_args,
        folder=lambda wc: f"{R}/logs/submitit/{rule}/{wc.kind}/{wc.model}/seed{wc.seed}",
        digest=digest("dataset", "models", "evaluate"),
    )


def attack_args(wildcards, output):
    args = ["attack", "--model", wildcards.model, "--seed", wildcards.seed, "--out", output[0]]
    return args + ckpt_args(attack_runs(wildcards.model), wildcards.seed)


# ----------------------------------------------------------------------------------------------------- analysis
ANALYSIS_DIR = Path(os.path.relpath(Path(workflow.basedir).parent / "analysis"))
CAPTIONS = Path(workflow.basedir) / "report"


def target_inputs(target):
    """The DAG outputs matching the target's glob patterns (relative to R), as paths."""
    data = data_outputs() + [o for t in catalog.TARGETS.values() for o in t.outputs if o not in target.outputs]
    return [f"{R}/{f}" for f in data if any(fnmatch.fnmatch(f, p) for p in target.inputs)]


def target_code(target):
    mod = target.function.split(":")[0].split(".")[-1]
    return [str(ANALYSIS_DIR / f"{mod}.py"), str(ANALYSIS_DIR / "common.py")]


def target_outputs(name, target):
    """Outputs, with the figure PNGs and table HTMLs registered for the report under their caption."""
    caption = next((c for c in (CAPTIONS / f"{name}.rst", CAPTIONS / f"table_{name}.rst") if c.is_file()), None)
    outs = []
    for out in target.outputs:
        path = f"{R}/{out}"
        kind = "Figures" if out.startswith("figures/") else "Tables"
        if out.endswith((".png", ".html")) and caption is not None:
            path = report(path, caption=str(caption), category=kind, labels={"name": name})
        outs.append(path)
    return outs
