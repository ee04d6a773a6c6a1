# Robustness (Table Supp.6): PGD and SPSA against each model of saccader.catalog.ATTACKS, every seed.


rule attack:
    input:
        lambda wc: [model_pt(run, wc.seed) for run in attack_runs(wc.model)],
    output:
        f"{R}/attack/{{model}}/seed{{seed}}.parquet",
        images_path(f"{R}/attack/{{model}}/seed{{seed}}.parquet"),
    conda:
        ENV
    log:
        f"{R}/logs/attack/{{model}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/attack/{{model}}/seed{{seed}}.tsv"
    wildcard_constraints:
        model="|".join(attack_models()),
    params:
        args=attack_args,
        folder=lambda wc: f"{R}/logs/submitit/attack/{wc.model}/seed{wc.seed}",
        digest=digest("dataset", "models", "attack"),
    resources:
        **HEAVY_RESOURCES,
    shell:
        launch()
