"""Data sets, seeded stratified splits, transforms and loaders."""

from .dataset import DatasetInfo, ImageDataset
from .fingerprint import data_fingerprint
from .idx import read_idx
from .loaders import make_loader
from .registry import dataset_help, dataset_names, default_data_root, get_dataset, split_transform
from .splits import DataSplits, load_splits, stratified_split, stratified_subset
from .synthetic import SyntheticConfig, make_synthetic

__all__ = [
    "DatasetInfo",
    "ImageDataset",
    "DataSplits",
    "SyntheticConfig",
    "data_fingerprint",
    "dataset_help",
    "dataset_names",
    "default_data_root",
    "get_dataset",
    "load_splits",
    "make_loader",
    "make_synthetic",
    "read_idx",
    "split_transform",
    "stratified_split",
    "stratified_subset",
]
