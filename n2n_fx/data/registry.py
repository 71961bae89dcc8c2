"""Data sets by name: torchvision's, MNIST read from IDX files, image folders and a synthetic set.

``get_dataset`` returns an ``ImageDataset`` holding raw images and labels; its transform
is the evaluation transform by default (``transform="train"`` adds the paper's augmentation,
``None`` leaves raw images). Missing files raise ``DataError`` naming what was expected.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DataError, first_line
from .dataset import DatasetInfo, ImageDataset, no_options
from .folder import IMAGEFOLDER_OPTIONS, load_imagefolder
from .idx import load_mnist_split
from .synthetic import SyntheticConfig, make_synthetic
from .transforms import build_transform

__all__ = [
    "get_dataset",
    "dataset_names",
    "dataset_help",
    "default_data_root",
    "split_transform",
    "DATA_ROOT_ENV",
    "SPLIT_OPTIONS",
    "dataset_options_help",
]

DATA_ROOT_ENV = "N2N_FX_DATA"  # environment variable naming the default data folder

_MNIST_NORM = dict(mean=(0.1307,), std=(0.3081,))
_HALF_MEAN = dict(mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0))  # paper: mean subtraction of 0.5
_IMAGENET_MEAN = dict(mean=(0.485, 0.456, 0.406), std=(1.0, 1.0, 1.0))

# name -> (one-line description, loader(root, download, split, options) -> (source, targets, info))
_LOADERS: dict[str, tuple[str, Callable[..., tuple[Any, torch.Tensor, DatasetInfo]]]] = {}
_OPTIONS: dict[str, dict[str, str]] = {}  # name -> option -> what it does (and its default)

# options every data set takes: load_splits' own (count = int, fraction = float in [0, 1])
SPLIT_OPTIONS = {
    "val_size": "validation carved from training: count or fraction (default 0.1; none with a val folder)",
    "test_size": "test carved when there is no official test split: count or fraction (default 0.2)",
    "augment": "training augmentation: none, crop, crop_flip, resize_crop_flip, or true/false (default: the "
    "data set's, see its line)",
}


def _register(name: str, about: str, options: dict[str, str] | None = None, augment: str = "none"):
    def deco(fn):
        _LOADERS[name] = (f"{about} (augmentation: {augment})", fn)
        _OPTIONS[name] = dict(options or {})
        return fn

    return deco


def dataset_options_help(name: str) -> dict[str, str]:
    """Option -> description of data set ``name`` (its own options; ``SPLIT_OPTIONS`` apply to all)."""
    if name not in _OPTIONS:
        raise ConfigError(f"unknown data set {name!r}; use one of {', '.join(dataset_names())}")
    return dict(_OPTIONS[name])


def default_data_root() -> Path:
    """``$N2N_FX_DATA`` if set, else ``./data``."""
    return Path(os.environ.get(DATA_ROOT_ENV, "data"))


def dataset_help() -> dict[str, str]:
    """Data-set name -> one-line description (for command-line help)."""
    return {name: about for name, (about, _) in sorted(_LOADERS.items())}


def dataset_names() -> list[str]:
    """Registered data-set names (``imagefolder:PATH`` takes a folder after the colon).

    Example:
        >>> "synthetic" in dataset_names()
        True
    """
    return sorted(_LOADERS)


def _torchvision(name: str, cls_name: str, root: Path, download: bool, expected: str, **kwargs):
    """Build a torchvision data set, turning its missing-file and offline errors into DataError."""
    import torchvision.datasets as tvd

    if not download and not (root / expected).exists():
        raise DataError(
            f"{name} not found: expected {root / expected}; pass --data-root DIR (the folder holding "
            f"{expected}) or --download"
        )
    try:
        return getattr(tvd, cls_name)(str(root), download=download, **kwargs)
    except Exception as e:  # offline downloads and corrupt archives raise many kinds
        what = "download failed" if download else "could not be read"
        raise DataError(
            f"{name} {what} under {root} ({first_line(e)}); place {expected} there by hand and pass --data-root"
        ) from None


@_register(
    "synthetic",
    "procedurally drawn shapes, no files",
    options={
        "num_samples": "training images (default 6000; the compress job uses 2400)",
        "num_test": "test images (default 2000, or num_samples/5 when num_samples is given)",
        "num_classes": "classes (default 10)",
        "image_size": "image side in pixels (default 28)",
        "channels": "1 or 3 (default 1)",
        "noise": "std of the Gaussian pixel noise (default 0.15)",
        "max_rotation": "shape rotation range in radians (default 0.4)",
        "clutter": "probability of a distractor stroke (default 0.5)",
        "seed": "seed of the drawing (default 0)",
    },
)
def _synthetic(root, download, split, options):
    seed = int(options.pop("seed", 0))
    n_train = options.pop("num_samples", None)
    n_test = options.pop("num_test", None)
    known = set(SyntheticConfig.__dataclass_fields__)
    if set(options) - known:
        raise ConfigError(
            f"unknown synthetic options {sorted(set(options) - known)}; use num_samples, num_test, seed, "
            f"{', '.join(sorted(known))}"
        )
    cfg = SyntheticConfig(**options)
    if split == "train":
        n = int(n_train if n_train is not None else 6000)
    else:
        n = int(n_test if n_test is not None else (2000 if n_train is None else max(int(n_train) // 5, 1)))
    # an offset, not n2n_fx.seeds: these images are the data's identity, recorded by teacher checkpoints
    images, labels = _synthetic_cached(n, cfg, seed if split == "train" else seed + 1_000_003)
    info = DatasetInfo(
        "synthetic",
        cfg.num_classes,
        cfg.channels,
        cfg.image_size,
        mean=(0.25,) * cfg.channels,
        std=(0.25,) * cfg.channels,
    )
    return images, labels, info


@functools.lru_cache(maxsize=8)
def _synthetic_cached(n: int, cfg: SyntheticConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return make_synthetic(n, cfg, seed)


def _mnist_info(name: str, **kw) -> DatasetInfo:
    return DatasetInfo(name, 10, 1, 28, **_MNIST_NORM, **kw)


@_register("mnist", "MNIST 60k/10k from IDX files under root (or MNIST/raw/); --download fetches them")
def _mnist(root, download, split, options):
    no_options("mnist", options)
    try:
        images, labels = load_mnist_split(root, split)
    except DataError:
        if not download:
            raise
        _torchvision("mnist", "MNIST", root, True, "MNIST/raw", train=split == "train")
        images, labels = load_mnist_split(root, split)
    return images.unsqueeze(1), labels, _mnist_info("mnist")


@_register(
    "mnist10k",
    "MNIST's official 10k test files only; load_splits carves train/val/test (7000/1000/2000)",
)
def _mnist10k(root, download, split, options):
    no_options("mnist10k", options)
    try:
        images, labels = load_mnist_split(root, "test")
    except DataError:
        if not download:
            raise
        _torchvision("mnist10k", "MNIST", root, True, "MNIST/raw", train=False)
        images, labels = load_mnist_split(root, "test")
    info = _mnist_info("mnist10k", has_test=False, default_val_size=1000, default_test_size=2000)
    return images.unsqueeze(1), labels, info


def _cifar(name: str, cls_name: str, folder: str, classes: int):
    def load(root, download, split, options):
        no_options(name, options)
        ds = _torchvision(name, cls_name, root, download, folder, train=split == "train")
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32) uint8
        info = DatasetInfo(name, classes, 3, 32, **_HALF_MEAN, augment="crop_flip")
        return images, torch.as_tensor(ds.targets), info

    return load


_register("cifar10", "CIFAR-10 (torchvision; root holds cifar-10-batches-py/)", augment="crop_flip")(
    _cifar("cifar10", "CIFAR10", "cifar-10-batches-py", 10)
)
_register("cifar100", "CIFAR-100 (torchvision; root holds cifar-100-python/)", augment="crop_flip")(
    _cifar("cifar100", "CIFAR100", "cifar-100-python", 100)
)


@_register("svhn", "SVHN train/test (torchvision; root holds train_32x32.mat, test_32x32.mat)")
def _svhn(root, download, split, options):
    no_options("svhn", options)
    ds = _torchvision("svhn", "SVHN", root, download, f"{split}_32x32.mat", split=split)
    info = DatasetInfo("svhn", 10, 3, 32, **_HALF_MEAN)
    return torch.from_numpy(ds.data), torch.as_tensor(ds.labels), info


@_register(
    "caltech256",
    "Caltech-256 (torchvision; root holds caltech256/256_ObjectCategories/)",
    options={"image_size": "side of the square model input (default 224)"},
    augment="resize_crop_flip",
)
def _caltech256(root, download, split, options):
    size = int(options.pop("image_size", 224))
    no_options("caltech256", options)
    ds = _torchvision("caltech256", "Caltech256", root, download, "caltech256/256_ObjectCategories")
    targets = torch.as_tensor(ds.y)
    num_classes = int(targets.max()) + 1 if len(targets) else 0
    info = DatasetInfo(
        "caltech256",
        num_classes,
        3,
        size,
        **_IMAGENET_MEAN,
        augment="resize_crop_flip",
        resize=True,
        has_test=False,
    )
    return ds, targets, info


@_register(
    "imagefolder",
    "imagefolder:PATH: PATH/<class>/<image>, or PATH/train/ (+ val/, test/) each holding class folders",
    options=IMAGEFOLDER_OPTIONS,
)
def _imagefolder(root, download, split, options):
    return load_imagefolder(split, options)


def split_transform(info: DatasetInfo, train: bool) -> Callable[[Any], torch.Tensor]:
    """The transform for ``info``'s training (augmented) or evaluation images."""
    return build_transform(
        image_size=info.image_size,
        channels=info.in_channels,
        mean=info.mean,
        std=info.std,
        augment=info.augment if train else "none",
        resize=info.resize,
    )


def get_dataset(
    name: str,
    root: str | Path | None = None,
    download: bool = False,
    *,
    split: str | None = None,
    transform: str | Callable[[Any], torch.Tensor] | None = "eval",
    **options: Any,
) -> ImageDataset:
    """Load data set ``name`` as an ``ImageDataset`` (its ``info`` says classes, channels, size).

    ``split`` is ``"train"`` or ``"test"`` for data sets with an official test split and
    ``"all"`` for the others (``mnist10k``, ``caltech256``, ``imagefolder:PATH``; use
    ``load_splits`` to carve theirs). ``transform`` is ``"eval"`` (normalise), ``"train"``
    (plus the paper's augmentation), ``None`` (raw images) or a callable. ``options`` go
    to the data set (e.g. ``num_classes=``, ``image_size=`` for ``synthetic``).

    Example:
        >>> ds = get_dataset("synthetic", num_samples=50, image_size=16)
        >>> ds[0][0].shape, ds.info.num_classes
        (torch.Size([1, 16, 16]), 10)
    """
    base, _, arg = name.partition(":")
    if base not in _LOADERS:
        raise ConfigError(f"unknown data set {name!r}; use one of {', '.join(dataset_names())} (imagefolder:PATH)")
    if base == "imagefolder":
        if not arg and options.get("train_dir") is None:
            raise ConfigError("imagefolder needs a folder: write imagefolder:PATH or pass --train-dir DIR")
        if arg:
            options["path"] = arg
    elif arg:
        raise ConfigError(f"data set {base!r} takes no ':' argument; write {base}")
    root = Path(root) if root is not None else default_data_root()
    official_test = base not in ("mnist10k", "caltech256", "imagefolder")
    split = split or ("train" if official_test else "all")
    allowed = ("train", "test") if official_test else ("all",)
    if base == "imagefolder":
        allowed = ("all", "train", "val", "test")  # val / test exist when the folder has them
    if split not in allowed:
        raise ConfigError(
            f"data set {name!r} has splits {allowed}, not {split!r}; use load_splits() to carve validation/test"
        )
    source, targets, info = _LOADERS[base][1](root, download, split, dict(options))
    if isinstance(transform, str):
        if transform not in ("eval", "train"):
            raise ConfigError(f"transform {transform!r} is not 'eval', 'train', None or a callable")
        transform = split_transform(info, train=transform == "train")
    return ImageDataset(source, targets, info, transform)
