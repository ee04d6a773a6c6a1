# Model bundles with their test accuracy: R/models/RUN/seedS/model.pt (a copy of the run's) and card.json (the
# run's card plus its test top-1 / top-5 from its evaluation jobs), for every run an evaluation reports on. Load one
# with saccader.models.load(folder) or `saccader predict folder IMAGES`; no config needed.


rule export_model:
    input:
        model=lambda wc: model_pt(wc.run, wc.seed),
        evals=export_inputs,
    output:
        model=f"{R}/models/{{run}}/seed{{seed}}/model.pt",
        card=f"{R}/models/{{run}}/seed{{seed}}/card.json",
    conda:
        ENV
    log:
        f"{R}/logs/export/{{run}}/seed{{seed}}.log",
    wildcard_constraints:
        run="|".join(exported_runs()) or "no-run",
    params:
        run_dir=lambda wc: run_dir(wc.run, wc.seed),
        out=lambda wc: bundle_dir(wc.run, wc.seed),
    shell:
        "python -m saccader export {params.run_dir:q} --out {params.out:q} --eval {input.evals:q} > {log:q} 2>&1"
