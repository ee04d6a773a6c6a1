# Figures, tables, claims and the results index: one rule per saccader.catalog.TARGETS entry (name it to build it,
# e.g. `snakemake fig3`). Each reads only the results its glob patterns name and lists its own plotting code as input,
# so editing that code reruns only the plotting job.


rule param_counts:
    output:
        f"{R}/params.parquet",
    conda:
        ENV
    log:
        f"{R}/logs/params.log",
    shell:
        "python -m saccader params --out {output:q} > {log:q} 2>&1"


for _name, _target in catalog.TARGETS.items():

    rule:
        name:
            _name
        input:
            data=target_inputs(_target),
            code=target_code(_target),
        output:
            target_outputs(_name, _target),
        conda:
            ENV
        log:
            f"{R}/logs/analysis/{_name}.log",
        params:
            target=_name,
            results=lambda wc, output, rel=_target.outputs[0]: output[0][: -len(rel) - 1],
        resources:
            run_config=RUN_CONFIG,
        shell:
            "python -m analysis {params.target:q} --results {params.results:q} --out {params.results:q}"
            " --config {resources.run_config:q} > {log:q} 2>&1"
