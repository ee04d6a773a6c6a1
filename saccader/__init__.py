"""Saccader (Elsayed, Kornblith, Le, NeurIPS 2019): a PyTorch reproduction pipeline."""

__version__ = "0.1.0"
