# The two commands of the README:
#   make run    set up .venv (once) and run the whole embedded experiment (Snakemake, 2 cores) + report
#   make test   set up .venv (once) and run the test suite (what CI runs, via .ci/run)
VENV      ?= .venv
CONFIG    ?= config/embedded.yaml
CORES     ?= 2
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run report test test-all lint dry-run-paper clean-results

setup:
	@bash scripts/setup.sh

run: setup
	snakemake --configfile $(CONFIG) --cores $(CORES) all
	snakemake --configfile $(CONFIG) --cores $(CORES) --report results/report.html
	@echo "results: results/index.html (browse) and results/report.html (Snakemake report)"

report: setup
	snakemake --configfile $(CONFIG) --cores $(CORES) --report results/report.html

test: setup
	bash scripts/test.sh

lint: setup
	snakemake --lint --configfile $(CONFIG)

clean-results:
	rm -rf results .snakemake
