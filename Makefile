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

.PHONY: setup run report test test-all lint dry-run-paper clean-results

setup:
	@bash scripts/setup.sh

run: setup
	snakemake --configfile $(CONFIG) --cores $(CORES) all
	snakemake --configfile $(CONFIG) --cores $(CORES) --report $(RESULTS)/report.html
	@echo "results: $(RESULTS)/index.html (browse) and $(RESULTS)/report.html (Snakemake report)"

report: setup
	snakemake --configfile $(CONFIG) --cores $(CORES) --report $(RESULTS)/report.html

test: setup
	bash scripts/test.sh

lint: setup
	snakemake --lint --configfile $(CONFIG)

clean-results:
	rm -rf results .snakemake
