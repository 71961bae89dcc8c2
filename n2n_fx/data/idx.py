"""Read MNIST-style IDX files (plain or gzip) into tensors, without torchvision's folder layout."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

__all__ = ["read_idx", "find_idx_file", "load_mnist_split"]

# IDX type code -> numpy dtype (big-endian where it matters)
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# split -> (images file stem, labels file stem) as published by LeCun et al.
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file (``.gz`` or uncompressed) into a tensor of its stored shape.

    Example:
        >>> import struct, tempfile
        >>> path = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte.gz"  # MNIST's labels, three of them
        >>> _ = path.write_bytes(gzip.compress(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3) + bytes([7, 2, 1])))
        >>> read_idx(path)
        tensor([7, 2, 1], dtype=torch.uint8)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path} ({e}); re-download it or check --data-root") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); re-download it")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path} holds {len(data) - header} data bytes but its header says {expected}; re-download it")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def find_idx_file(root: str | Path, stem: str) -> Path | None:
    """Find ``stem`` (or ``stem.gz``) in ``root``, ``root/raw``, ``root/mnist/raw`` or ``root/MNIST/raw``."""
    root = Path(root)
    for folder in (root, root / "raw", root / "mnist" / "raw", root / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_mnist_split(root: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of MNIST's ``train`` or ``test`` split."""
    image_stem, label_stem = _MNIST_FILES[split]
    image_file, label_file = find_idx_file(root, image_stem), find_idx_file(root, label_stem)
    if image_file is None or label_file is None:
        missing = image_stem if image_file is None else label_stem
        raise DataError(
            f"MNIST {split} file {missing}[.gz] not found under {root} (looked in ., raw/, mnist/raw/, MNIST/raw/); "
            "pass --data-root to the folder holding it, or --download"
        )
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"MNIST {split} files disagree: images {tuple(images.shape)}, labels {tuple(labels.shape)}; re-download them"
        )
    return images, labels.long()
