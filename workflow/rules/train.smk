# Training: one job per (run, seed). The DAG edges are the runs' init_from (saccader.pipeline.config.init_runs):
# BagNet-77-lowD
# -> location pre-training -> Saccader; DRAM pre-training -> DRAM; NASNet -> NASNet-77/-113 on Saccader patches.
from saccader.pipeline.config import check_layout

# How a run's global batch is cut (execution facts from the profile, never in a digest): `nodes` x `gpu` tasks, and
# per task micro-batches of `micro_batch` images whose gradients are accumulated (0: the task's whole share).
TRAIN_RESOURCES = dict(HEAVY_RESOURCES, nodes=1, micro_batch=0)
# Checked while the workflow is parsed: a bad cut is one line before any job is submitted, not a job failure after
# its wait in the queue.
check_layout(config, {**TRAIN_RESOURCES, **workflow.resource_settings.overwrite_resources.get("train", {})})


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
        launch(["--nodes", "{resources.nodes:q}"], ["--micro-batch", "{resources.micro_batch:q}"])
