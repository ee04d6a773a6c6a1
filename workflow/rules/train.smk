# Training: one job per (run, seed). The DAG edges are the runs' init_from (saccader.train.init_runs): BagNet-77-lowD
# -> location pre-training -> Saccader; DRAM pre-training -> DRAM; NASNet -> NASNet-77/-113 on Saccader patches.


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
        **HEAVY_RESOURCES,
    shell:
        LAUNCH
