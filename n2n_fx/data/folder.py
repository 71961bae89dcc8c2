"""Image folders as users have them: one sub-folder per class, optionally split into train/ val/ test/.

A folder is either a *class folder* (``ROOT/<class>/<image>``) or a *split root* holding a
``train/`` class folder and optionally ``val/`` and ``test/`` ones (``--train-dir`` etc. give
them one by one). Images keep their own size and channels unless told otherwise: grey
images stay grey, 28-pixel images stay 28 pixels. Small folders of same-size images are
decoded once into a uint8 tensor, so training reads them as fast as MNIST.

Example:
    >>> folder = scan_folder("my_digits")  # doctest: +SKIP
    >>> folder.classes[:3], folder.channels, folder.size  # doctest: +SKIP
    (['0', '1', '2'], 1, (28, 28))
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError

__all__ = ["ImageFolderScan", "scan_folder", "split_dirs", "decode_images", "files_hash", "SPLIT_NAMES"]

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
