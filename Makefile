# The two commands of the README:
#   make run    set up .venv (once) and run the whole embedded experiment (Snakemake, 2 cores) + report
#   make test   set up .venv (once) and run the test suite (what CI runs, via .ci/run)
#   make wet-run  the paper's models at full size on a generated miniature ImageNet (meaningless numbers)
# EXPERIMENT names an overlay of config/ (merged over config.yaml, as `snakemake --configfile` does); its results
# go to results/$(EXPERIMENT) (the overlay's results_dir).
VENV      ?= .venv
EXPERIMENT ?= embedded
CONFIG    ?= config/$(EXPERIMENT).yaml
RESULTS   ?= results/$(EXPERIMENT)
CORES     ?= 2
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run report docs-results wet-run test test-all lint dry-run-paper clean-results

setup:
	@bash scripts/setup.sh

run: setup
	snakemake --configfile $(CONFIG) --cores $(CORES) all
	snakemake --configfile $(CONFIG) --cores $(CORES) --report $(RESULTS)/report.html
	@echo "results: $(RESULTS)/index.html (browse) and $(RESULTS)/report.html (Snakemake report)"

report: setup
	snakemake --configfile $(CONFIG) --cores $(CORES) --report $(RESULTS)/report.html

# docs/results.md, the README's results: a run's results.md with the files it is rendered from (docs/results/),
# which tests/test_docs.py renders again. After `make run`.
docs-results:
	python -m analysis results_md --results $(RESULTS)
	mkdir -p docs/results/tables
	cp $(RESULTS)/claims.csv $(RESULTS)/run.json docs/results/
	cp $(RESULTS)/tables/table_summary.md $(RESULTS)/tables/table_plateau.csv docs/results/tables/
	cp $(RESULTS)/results.md docs/results.md

# The paper path for real, on 2 CPU cores: every paper-size model, every job of the DAG for one seed, on a generated
# miniature ImageNet (config/mini-imagenet.yaml; its numbers are meaningless). Per-job time and peak RSS:
# results/mini-imagenet/benchmarks (python bench/p5_rules.py results/mini-imagenet).
wet-run: setup
	python -m saccader make-mini-imagenet --config config.yaml --config config/mini-imagenet.yaml
	snakemake --configfile config/mini-imagenet.yaml --cores $(CORES) all
	snakemake --configfile config/mini-imagenet.yaml --cores $(CORES) --report results/mini-imagenet/report.html
	@echo "results: results/mini-imagenet/index.html and results/mini-imagenet/report.html (numbers meaningless)"

test: setup
	bash scripts/test.sh

lint: setup
	snakemake --lint --configfile $(CONFIG)

clean-results:
	rm -rf results .snakemake
