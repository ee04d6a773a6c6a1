# Data: the embedded dataset is built by the workflow; ImageNet is the user's, only checked (a heavy job: it decodes
# every image). Every training job depends on the check, so nothing trains on a broken tree.
DATA_ROOT = config["dataset"]["root"].rstrip("/")
DATA_OK = f"{R}/checks/data.ok"


if DIGITS:

    rule make_dataset:
        output:
            f"{DATA_ROOT}/manifest.json",
        conda:
            ENV
        log:
            f"{R}/logs/make_dataset.log",
        params:
            digest=digest("dataset"),
        resources:
            run_config=RUN_CONFIG,
        shell:
            "python -m saccader make-dataset --config {resources.run_config:q} > {log:q} 2>&1"


rule check_data:
    input:
        f"{DATA_ROOT}/manifest.json" if DIGITS else [],
    output:
        DATA_OK,
    conda:
        ENV
    log:
        f"{R}/logs/check_data.log",
    benchmark:
        f"{R}/benchmarks/check_data.tsv"
    params:
        args=lambda wc, output: ["check-data", "--stamp", output[0]],
        folder=f"{R}/logs/submitit/check_data",
        digest=digest("dataset"),
    resources:
        **HEAVY_RESOURCES,
    shell:
        launch()
