# Training: one job per (run, seed). The DAG edges are the runs' init_from (saccader.train.init_runs): BagNet-77-lowD
# -> location pre-training -> Saccader; DRAM pre-training -> DRAM; NASNet -> NASNet-77/-113 on Saccader patches.
from saccader.errors import UserError
from saccader.train import split_problem

# How a run's global batch is cut (execution facts from the profile, never in a digest): `nodes` x `gpu` tasks, and
# per task micro-batches of `micro_batch` images whose gradients are accumulated (0: the task's whole share).
TRAIN_RESOURCES = dict(HEAVY_RESOURCES, nodes=1, micro_batch=0)
TRAIN_LAUNCH = LAUNCH.replace(" --gpus ", " --nodes {resources.nodes} --gpus ").replace(
    " -- {params.args:q}", " -- {params.args:q} --micro-batch {resources.micro_batch}"
)
assert TRAIN_LAUNCH.count("{resources.nodes}") == TRAIN_LAUNCH.count("{resources.micro_batch}") == 1


def check_train_layout():
    """Every run's global batch must cut into the profile's nodes x GPUs and micro-batches: checked while the
    workflow is parsed, so a bad cut is one line before any job is submitted, not a failure after a queue wait."""
    res = {**TRAIN_RESOURCES, **workflow.resource_settings.overwrite_resources.get("train", {})}
    value = lambda key: int(getattr(res[key], "value", res[key]))  # snakemake.resources.Resource or a number
    nodes, gpus, micro = value("nodes"), value("gpu"), value("micro_batch")
    where = f"profile resources of rule train: nodes={nodes}, gpu={gpus}, micro_batch={micro}"
    if nodes < 1:
        raise UserError(f"{where}: nodes must be at least 1", "set nodes to 1 or more under set-resources: train:")
    for run in RUNS:
        problem = split_problem(config["train"][run]["batch_size"], nodes * max(1, gpus), micro)
        if problem:
            raise UserError(f"rule train, run {run}: {problem[0]} ({where})",
                            f"{problem[1]}: under set-resources: train: in the profile")


check_train_layout()


rule train:
    input:
        DATA_OK,
        train_inputs,
    output:
        f"{R}/runs/{{run}}/seed{{seed}}/model.pt",
        f"{R}/runs/{{run}}/seed{{seed}}/train_log.parquet",
    conda:
        ENV
    log:
        f"{R}/logs/train/{{run}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{run}}/seed{{seed}}.tsv"
    params:
        args=train_args,
        folder=lambda wc: f"{R}/logs/submitit/train/{wc.run}/seed{wc.seed}",
        digest=lambda wc: digest("dataset", "models", recipe=config["train"][wc.run]),
    priority: train_priority
    resources:
        **TRAIN_RESOURCES,
    shell:
        TRAIN_LAUNCH
