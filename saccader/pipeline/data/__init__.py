"""Data: the embedded cluttered-digits generator and ImageFolder loading shared with ImageNet."""

from saccader.pipeline.data.folder import build_dataset, build_transform, check_data, list_split, split_train_dev

__all__ = ["build_dataset", "build_transform", "check_data", "list_split", "split_train_dev"]
