"""Image folders as users have them: one sub-folder per class, optionally split into train/ val/ test/.

A folder is either a *class folder* (``ROOT/<class>/<image>``) or a *split root* holding a
``train/`` class folder and optionally ``val/`` and ``test/`` ones (``--train-dir`` etc. give
them one by one). Images keep their own size and channels unless told otherwise: grey
images stay grey, 28-pixel images stay 28 pixels. Small folders of same-size images are
decoded once into a uint8 tensor, so training reads them as fast as MNIST. ``load_imagefolder``
is the ``imagefolder`` data set (``registry`` registers it): split folders, cached scans, pixel statistics.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp()) / "my_digits"
    >>> for digit in "012":
    ...     (root / digit).mkdir(parents=True)
    ...     Image.new("L", (28, 28)).save(root / digit / "a.png")
    >>> folder = scan_folder(root)
    >>> folder.classes, folder.channels, folder.size
    (('0', '1', '2'), 1, (28, 28))
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DataError
from .dataset import DatasetInfo, no_options

__all__ = [
    "ImageFolderScan",
    "scan_folder",
    "split_dirs",
    "decode_images",
    "files_hash",
    "SPLIT_NAMES",
    "IMAGEFOLDER_OPTIONS",
    "load_imagefolder",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# folder names that mean "a split", never "a class" (lower case)
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "all": "all",
}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P;grey"}
_DECODE_LIMIT = 1 << 30  # bytes of uint8 pixels up to which a folder is decoded into memory


@dataclass(frozen=True)
class ImageFolderScan:
    """What one class folder holds."""

    root: Path  # the class folder
    classes: tuple[str, ...]  # class names, sorted (label i is classes[i])
    files: tuple[Path, ...]  # every image, in class then name order
    targets: tuple[int, ...]  # label of each file
    channels: int  # 1 when every image is grey, else 3
    size: tuple[int, int] | None  # (H, W) shared by every image, None when sizes vary
    short_side: int  # median shorter side of the images

    def __len__(self) -> int:
        return len(self.files)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def split_dirs(path: Path) -> dict[str, Path]:
    """The split sub-folders of ``path`` by split name (``train``, ``val``, ``test``, ``all``)."""
    out: dict[str, Path] = {}
    if path.is_dir():
        for sub in sorted(path.iterdir()):
            split = SPLIT_NAMES.get(sub.name.lower())
            if sub.is_dir() and split and split not in out:
                out[split] = sub
    return out


def scan_folder(path: str | Path, what: str = "image folder") -> ImageFolderScan:
    """List the classes and images of a class folder; DataError (one line, with a hint) when it is not one."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{what} {root} does not exist; give a folder with one sub-folder of images per class")
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    splits = [p.name for p in subs if p.name.lower() in SPLIT_NAMES]
    if splits:
        named = " ".join(
            f"--{SPLIT_NAMES[s.lower()]}-dir {root / s}" for s in splits if SPLIT_NAMES[s.lower()] != "all"
        )
        raise DataError(
            f"{root} holds split folders ({', '.join(splits)}), not class folders; "
            f"give the folder that holds them as imagefolder:{root} or pass {named or '--train-dir DIR'}"
        )
    classes, files, targets, nested = [], [], [], []
    for sub in subs:
        images = _images_in(sub)
        if not images:
            continue
        if all(p.parent != sub for p in images):  # only in sub-sub-folders: maybe a parent of class folders
            nested.append(sub)
        classes.append(sub.name)
        files += images
        targets += [len(classes) - 1] * len(images)
    if nested and len(nested) == len(classes):
        inner = sorted({p.name for p in nested[0].iterdir() if p.is_dir()})
        raise DataError(
            f"{root}'s sub-folders hold folders ({', '.join(inner[:4])}), not images: it looks like the parent "
            f"of the class folders; give imagefolder:{nested[0]} (the folder whose sub-folders are the classes)"
        )
    if not files:
        raise DataError(f"{root} has no images in class sub-folders ({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
    if len(classes) < 2:
        raise DataError(f"{root} has a single class folder ({classes[0]}); a classifier needs two or more")
    channels, sizes = _probe(files)
    common = Counter(sizes).most_common(1)[0][0]
    shorts = sorted(min(s) for s in sizes)
    return ImageFolderScan(
        root=root,
        classes=tuple(classes),
        files=tuple(files),
        targets=tuple(targets),
        channels=channels,
        size=common if len(set(sizes)) == 1 else None,
        short_side=shorts[len(shorts) // 2],
    )


def _probe(files: tuple[Path, ...] | list[Path]) -> tuple[int, list[tuple[int, int]]]:
    """Channels (1 if all grey) and (H, W) of every image, read from the file headers only."""
    from PIL import Image, UnidentifiedImageError

    grey, sizes = True, []
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.append((im.height, im.width))
                mode = im.mode
                if mode == "P":
                    pal = im.getpalette() or []
                    mode = (
                        "P;grey" if all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3)) else "P"
                    )
                grey = grey and mode in _GREY_MODES
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"cannot read image {f} ({type(e).__name__}); remove it or fix it") from None
    return (1 if grey else 3), sizes


def decode_images(scan: ImageFolderScan, channels: int) -> torch.Tensor | None:
    """Every image as one uint8 tensor ``(N, C, H, W)``, or None when sizes vary or it would not fit."""
    if scan.size is None:
        return None
    h, w = scan.size
    if len(scan) * channels * h * w > _DECODE_LIMIT:
        return None
    import numpy as np
    from PIL import Image

    out = torch.empty(len(scan), channels, h, w, dtype=torch.uint8)  # (N, C, H, W)
    mode = "L" if channels == 1 else "RGB"
    for i, f in enumerate(scan.files):
        with Image.open(f) as im:
            a = np.asarray(im.convert(mode))
        out[i] = torch.from_numpy(a.copy()).reshape(h, w, channels).permute(2, 0, 1)
    return out


def files_hash(scan: ImageFolderScan) -> str:
    """SHA-1 over class names, relative paths and file bytes: changes whenever the images do."""
    h = hashlib.sha1()
    for f, t in zip(scan.files, scan.targets, strict=True):
        h.update(f"{scan.classes[t]}/{f.relative_to(scan.root)}\0".encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# -- the imagefolder data set: its options, split folders, cached scans and decoded pixels ---------------

IMAGEFOLDER_OPTIONS = {
    "train_dir": "class folder of the training images (--train-dir; or imagefolder:ROOT holding train/)",
    "val_dir": "class folder of the validation images (--val-dir; default: ROOT/val, else carved from train)",
    "test_dir": "class folder of the test images (--test-dir; default: ROOT/test, else carved from train)",
    "image_size": "side of the square model input (default: the images' own, median shorter side when sizes "
    "vary, at most 224)",
    "channels": "1 (grey) or 3 (colour) (default: 1 when every image is grey, else 3)",
}


def load_imagefolder(split: str, options: dict) -> tuple[Any, torch.Tensor, DatasetInfo]:
    """The ``imagefolder`` data set's split: (images or a torchvision ImageFolder, targets, info)."""
    dirs = _folder_dirs(options)
    size_opt, channels_opt = options.pop("image_size", None), options.pop("channels", None)
    no_options("imagefolder", options)
    if channels_opt is not None and str(channels_opt) not in ("1", "3"):
        raise ConfigError(f"imagefolder option channels={channels_opt!r} must be 1 (grey) or 3 (colour)")
    train = _scan(dirs["train"], "training folder")
    want = "train" if split == "all" else split
    if want not in dirs:
        raise DataError(f"{dirs['train'].parent} has no {want} folder; load_splits carves {want} from train")
    scan = train if want == "train" else _scan(dirs[want], f"{want} folder")
    if scan.classes != train.classes:
        extra = sorted(set(scan.classes) ^ set(train.classes))
        raise DataError(
            f"{scan.root} and {train.root} have different class folders ({', '.join(extra[:5])}); "
            "give every split the same class sub-folders"
        )
    channels = int(channels_opt) if channels_opt is not None else train.channels
    own = min(train.size) if train.size else min(train.short_side, 224)
    size = int(size_opt) if size_opt is not None else own
    if size <= 0:
        raise ConfigError(f"imagefolder option image_size={size} must be positive")
    images = _decoded(scan, channels)
    mean, std = _folder_norm(train, channels)
    info = DatasetInfo(
        f"imagefolder:{dirs['train'] if 'root' not in dirs else dirs['root']}",
        len(train.classes),
        channels,
        size,
        mean=mean,
        std=std,
        augment="none",
        resize=train.size is None or train.size != (size, size),
        has_test="test" in dirs,
        has_val="val" in dirs,
        classes=train.classes,
    )
    if images is not None:
        return images, torch.tensor(scan.targets), info
    import torchvision.datasets as tvd

    ds = tvd.ImageFolder(str(scan.root), allow_empty=True)
    if [str(p) for p, _ in ds.samples] != [str(f) for f in scan.files]:
        ds.samples = [(str(f), t) for f, t in zip(scan.files, scan.targets, strict=True)]
    return ds, torch.tensor(scan.targets), info


def _folder_dirs(options: dict) -> dict[str, Path]:
    """Split name -> class folder, from imagefolder:PATH and/or train_dir / val_dir / test_dir."""
    path = options.pop("path", None)
    given = {k: options.pop(f"{k}_dir") for k in ("train", "val", "test") if options.get(f"{k}_dir") is not None}
    for k in ("train", "val", "test"):
        options.pop(f"{k}_dir", None)
    dirs: dict[str, Path] = {}
    if path is not None:
        p = Path(path)
        if not p.is_dir():
            raise DataError(f"image folder {p} does not exist; give imagefolder:PATH with one sub-folder per class")
        found = split_dirs(p)
        if "train" in found:
            dirs = {k: v for k, v in found.items() if k != "all"}
            dirs["root"] = p
        elif found:
            raise DataError(
                f"{p} holds split folders ({', '.join(sorted(v.name for v in found.values()))}) but no train/; "
                "rename the training folder to train/ or pass --train-dir DIR"
            )
        else:
            dirs = {"train": p}
    dirs.update({k: Path(v) for k, v in given.items()})
    if "train" not in dirs:
        raise ConfigError("imagefolder needs training images: write imagefolder:PATH or pass --train-dir DIR")
    return dirs


_FOLDER_CACHE: dict[tuple, Any] = {}  # (folder, file stats, channels) -> scan / decoded images


def _stat_key(folder: Path) -> tuple:
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*")) if p.is_file())


def _scan(folder: Path, what: str):
    key = (
        "scan",
        str(folder.resolve()) if folder.exists() else str(folder),
        _stat_key(folder) if folder.is_dir() else (),
    )
    if key not in _FOLDER_CACHE:
        if len(_FOLDER_CACHE) > 16:
            _FOLDER_CACHE.clear()
        _FOLDER_CACHE[key] = scan_folder(folder, what)
    return _FOLDER_CACHE[key]


def _decoded(scan, channels: int) -> torch.Tensor | None:
    key = ("pixels", str(scan.root.resolve()), _stat_key(scan.root), channels)
    if key not in _FOLDER_CACHE:
        _FOLDER_CACHE[key] = decode_images(scan, channels)
    return _FOLDER_CACHE[key]


def _folder_norm(train, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean / std of the training folder's pixels (decoded) or a neutral 0.5 / 0.25 (varying sizes)."""
    images = _decoded(train, channels)
    if images is None:
        return (0.5,) * channels, (0.25,) * channels
    pixels = images.float().div_(255.0)  # (N, C, H, W)
    return tuple(float(m) for m in pixels.mean((0, 2, 3))), tuple(max(float(v), 1e-3) for v in pixels.std((0, 2, 3)))
