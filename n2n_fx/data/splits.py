"""Seeded, stratified train / validation / test splits; validation is always carved from training data.

Rewards are computed on ``val``; ``test`` is for final reports only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .dataset import DatasetInfo, ImageDataset
from .registry import get_dataset, split_transform
from .transforms import AUGMENTATIONS

__all__ = [
    "DataSplits",
    "load_splits",
    "stratified_split",
    "stratified_subset",
    "resolve_count",
    "parse_augment",
]

_OFF = ("false", "no", "off", "0", "none")
_ON = ("true", "yes", "on", "1")


def parse_augment(value: bool | int | str, info: DatasetInfo) -> str:
    """The augmentation preset ``value`` names for ``info``'s data set; ConfigError on anything else.

    ``False`` / ``"none"`` / ``"false"`` / ``"off"`` / ``0`` turn augmentation off; ``True`` /
    ``"true"`` / ``1`` keep the data set's own preset (an explicit "true" for a data set without
    one is an error: name a preset); a preset name picks that one.

    Example:
        >>> parse_augment("false", DatasetInfo("x", 2, 1, 8, (0.0,), (1.0,), augment="crop_flip"))
        'none'
    """
    if value is True:
        return info.augment
    text = str(value).strip().lower()
    if text in AUGMENTATIONS:
        return text
    if text in _OFF:
        return "none"
    if text in _ON:
        if info.augment == "none":
            raise ConfigError(
                f"augment={value!r}: {info.name} has no augmentation of its own; name one of {', '.join(AUGMENTATIONS)}"
            )
        return info.augment
    raise ConfigError(f"augment={value!r} is not one of {', '.join(AUGMENTATIONS)}, true or false")


def resolve_count(size: int | float, pool: int, what: str) -> int:
    """A count from ``size``: an int is a count, a float in [0, 1] a fraction of ``pool``."""
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{what}={size!r} must be a count or a fraction in [0, 1]")
    if isinstance(size, (float, np.floating)):
        if not 0.0 <= size <= 1.0:
            raise ConfigError(f"{what}={size} is not a fraction in [0, 1]; give a fraction or a count")
        return int(round(size * pool))
    if not 0 <= size <= pool:
        raise ConfigError(f"{what}={size} is more than the {pool} samples available; give at most {pool}")
    return int(size)


def stratified_split(targets: Sequence[int] | torch.Tensor, sizes: Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """Disjoint index sets of the given ``sizes``, each with the class mix of ``targets``.

    Each class's samples are shuffled and spread evenly over [0, 1); taking consecutive
    runs of that order gives every part a share of each class within one sample of
    proportional. ``sum(sizes)`` may be less than ``len(targets)`` (the rest is unused).

    Example:
        >>> parts = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], [2, 6], seed=0)
        >>> sorted(len(p) for p in parts)
        [2, 6]
    """
    labels = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets)
    n = len(labels)
    if any(s < 0 for s in sizes) or sum(sizes) > n:
        raise ConfigError(f"split sizes {list(sizes)} do not fit in {n} samples; make them smaller")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    key = np.empty(n)
    for c in np.unique(labels):
        members = perm[labels[perm] == c]  # class c in random order
        key[members] = (np.arange(len(members)) + rng.random()) / len(members)
    order = np.argsort(key, kind="stable")
    bounds = np.cumsum([0, *sizes])
    return [np.sort(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def stratified_subset(dataset: ImageDataset, size: int | float, seed: int = 0) -> ImageDataset:
    """A stratified random view of ``size`` samples (count or fraction) of ``dataset``."""
    n = resolve_count(size, len(dataset), "subset")
    if n == len(dataset):
        return dataset
    (idx,) = stratified_split(dataset.targets, [n], seed)
    return dataset.view(idx)


@dataclass(frozen=True)
class DataSplits:
    """Train / validation / test views of one data set (all share its images)."""

    train: ImageDataset  # training split with the data set's training augmentation
    train_plain: ImageDataset  # the same samples without augmentation (logit cache, reward training)
    val: ImageDataset  # validation, carved from the training data; rewards use it
    test: ImageDataset  # official test split (or carved when there is none); final reports only
    info: DatasetInfo  # classes, channels, image size, normalisation
    seed: int  # seed the splits were carved with

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def in_channels(self) -> int:
        return self.info.in_channels

    @property
    def image_size(self) -> int:
        return self.info.image_size

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of a model input."""
        return self.info.input_size

    def subset(
        self,
        train: int | float | None = None,
        val: int | float | None = None,
        seed: int | None = None,
    ) -> DataSplits:
        """Stratified subsets of train (augmented and plain alike) and/or val, for fast rewards.

        Example:
            >>> small = load_splits("synthetic", num_samples=500).subset(train=0.2, val=20)
            >>> len(small.train), len(small.val)
            (90, 20)
        """
        seed = self.seed if seed is None else seed
        out = self
        if train is not None:
            n = resolve_count(train, len(self.train), "train subset")
            (idx,) = stratified_split(self.train.targets, [n], seed)
            out = replace(out, train=self.train.view(idx), train_plain=self.train_plain.view(idx))
        if val is not None:
            out = replace(out, val=stratified_subset(self.val, val, seed))
        return out

    def describe(self) -> str:
        """One line for logs: name, classes, input size, split sizes and training augmentation."""
        c, h, w = self.input_size
        aug = self.info.augment if self.train.transform is not self.train_plain.transform else "none"
        return (
            f"{self.info.name}: {self.num_classes} classes, input {c}x{h}x{w}, train {len(self.train)} / "
            f"val {len(self.val)} / test {len(self.test)}, augmentation {aug}"
        )

    def __repr__(self) -> str:
        return (
            f"DataSplits({self.info.name}: train={len(self.train)}, val={len(self.val)}, "
            f"test={len(self.test)}, classes={self.num_classes}, input={self.input_size})"
        )


def load_splits(
    name: str,
    root: str | Path | None = None,
    download: bool = False,
    *,
    val_size: int | float | None = None,
    test_size: int | float | None = None,
    subset: int | float | None = None,
    augment: bool | int | str = True,
    seed: int = 0,
    **options: Any,
) -> DataSplits:
    """Load ``name`` and carve seeded, stratified train / validation (/ test) splits.

    ``val_size`` (count, or fraction of the training data; default per data set, 0.1
    mostly) is carved from the training split. Data sets without an official test split
    (``mnist10k``, ``caltech256``, image folders) first carve ``test_size`` (count or
    fraction of all; ``mnist10k`` default 7000/1000/2000). ``subset`` keeps a stratified
    part of the training split. ``augment`` is the data set's preset (``True``), ``False`` /
    ``"none"`` (off) or a preset name (``crop``, ``crop_flip``, ``resize_crop_flip``); anything
    else is a ConfigError. Image folders with ``val/`` or ``test/`` folders use them as is.

    Example:
        >>> s = load_splits("synthetic", num_samples=1000, seed=0)
        >>> len(s.train), len(s.val), len(s.test), s.input_size
        (900, 100, 200, (1, 28, 28))
    """
    raw = get_dataset(name, root, download, transform=None, **options)
    info = raw.info
    assert info is not None
    if info.has_test and test_size is not None:
        raise ConfigError(f"{name} has an official test split; drop test_size")
    if info.has_val and val_size is not None:
        raise ConfigError(f"{name} has a validation folder; drop val_size")
    preset = parse_augment(augment, info)
    info = replace(info, augment=preset)
    eval_t = split_transform(info, train=False)
    train_t = split_transform(info, train=True)
    if info.has_test:
        test = get_dataset(name, root, download, split="test", transform=eval_t, **options)
        pool = np.arange(len(raw))
    else:
        n_test = resolve_count(info.default_test_size if test_size is None else test_size, len(raw), "test_size")
        test_idx, pool = stratified_split(raw.targets, [n_test, len(raw) - n_test], seed)
        test = raw.view(test_idx, eval_t)
    if info.has_val:
        val = get_dataset(name, root, download, split="val", transform=eval_t, **options)
        train_idx = pool
    else:
        pool_targets = raw.targets[torch.from_numpy(pool)]
        n_val = resolve_count(info.default_val_size if val_size is None else val_size, len(pool), "val_size")
        # seed + 1, not n2n_fx.seeds: the split is the data's identity, recorded by every teacher checkpoint
        val_pos, train_pos = stratified_split(pool_targets, [n_val, len(pool) - n_val], seed + 1)
        val = raw.view(pool[val_pos], eval_t)
        train_idx = pool[train_pos]
    raw = ImageDataset(raw.source, raw.targets, info)
    val.info = info
    test.info = info
    splits = DataSplits(
        train=raw.view(train_idx, train_t),
        train_plain=raw.view(train_idx, eval_t),
        val=val,
        test=test,
        info=info,
        seed=seed,
    )
    return splits.subset(train=subset) if subset is not None else splits
