# `snakemake plan` (with --profile slurm at paper scale): what every job needs and costs before anything is submitted
# (saccader.pipeline.plan). Not part of `all`; reads the config and the SLURM profile, runs no model.


rule plan:
    input:
        profile="slurm/config.yaml",
    output:
        f"{R}/plan.md",
        f"{R}/plan.json",
    conda:
        ENV
    log:
        f"{R}/logs/plan.log",
    params:
        # the SLURM profile for ImageNet experiments, the local defaults for the embedded one
        profile=[] if DIGITS else ["--profile", "slurm"],
        results=lambda wc, output: os.path.dirname(output[0]),
        digest=digest(*sorted(config)),
    resources:
        run_config=RUN_CONFIG,
    shell:
        "python -m saccader plan --config {resources.run_config:q} {params.profile:q} --results {params.results:q}"
        " > {log:q} 2>&1"
