"""Saccader (Elsayed, Kornblith, Le, NeurIPS 2019): a PyTorch reproduction. This package is the method (models,
objectives, losses, geometry, the experiment catalog); ``saccader.pipeline`` runs the experiments."""

__version__ = "0.1.0"

# The torch-free core: what the workflow (while Snakemake parses) and the analysis import. tests/test_layers.py
# imports each in a fresh interpreter and fails if torch comes with it.
TORCH_FREE = ("saccader.catalog", "saccader.errors", "saccader.pipeline.config", "saccader.pipeline.io",
              "saccader.pipeline.results", "saccader.pipeline.snakelock", "analysis")
