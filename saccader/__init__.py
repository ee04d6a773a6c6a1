"""Saccader (Elsayed, Kornblith, Le, NeurIPS 2019): a PyTorch reproduction. This package is the method (models,
objectives, losses, geometry, the experiment catalog); ``saccader.pipeline`` runs the experiments."""

__version__ = "0.1.0"
