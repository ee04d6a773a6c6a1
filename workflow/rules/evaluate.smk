# Evaluations (saccader.catalog.EVALUATIONS): every policy x number of glimpses, full-image models, occlusion and
# Saccader-NASNet, for every seed, with their per-image outcomes (images_seed<S>.parquet, for the claims' intervals).
# The glimpses jobs also keep example glimpses for Figs 4 and Supp.1.


rule evaluate_glimpses:
    input:
        eval_inputs,
    output:
        f"{R}/eval/{{kind}}/{{model}}/seed{{seed}}.parquet",
        images_path(f"{R}/eval/{{kind}}/{{model}}/seed{{seed}}.parquet"),
        f"{R}/eval/{{kind}}/{{model}}/seed{{seed}}.parquet.examples.npz",
    conda:
        ENV
    log:
        f"{R}/logs/evaluate/{{kind}}/{{model}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{kind}}/{{model}}/seed{{seed}}.tsv"
    wildcard_constraints:
        kind="glimpses",
        model="|".join(eval_jobs()["glimpses"]),
    params:
        **eval_params("evaluate"),
    resources:
        **HEAVY_RESOURCES,
    shell:
        launch()


rule evaluate:
    input:
        eval_inputs,
    output:
        f"{R}/eval/{{kind}}/{{model}}/seed{{seed}}.parquet",
        images_path(f"{R}/eval/{{kind}}/{{model}}/seed{{seed}}.parquet"),
    conda:
        ENV
    log:
        f"{R}/logs/evaluate/{{kind}}/{{model}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{kind}}/{{model}}/seed{{seed}}.tsv"
    wildcard_constraints:
        kind="|".join(k for k in eval_jobs() if k != "glimpses"),
        model="|".join(sorted({m for k, ms in eval_jobs().items() if k != "glimpses" for m in ms})),
    params:
        **eval_params("evaluate"),
    resources:
        **HEAVY_RESOURCES,
    shell:
        launch()
