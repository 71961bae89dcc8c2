"""A data set's identity: a hash of its images and of which of them are held out for validation and test.

A teacher is only a fair reference on data it never trained on. The fingerprint changes when
the images change (re-exported files, another folder), when the validation or test split
changes (another seed, other sizes) and when the model input changes (image size, channels,
normalisation); the training subset does not enter it.

Example:
    >>> from n2n_fx.data import load_splits
    >>> a = data_fingerprint(load_splits("synthetic", num_samples=100, seed=0))
    >>> a == data_fingerprint(load_splits("synthetic", num_samples=100, seed=1))
    False
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..progress import progress_bar
from .dataset import ImageDataset
from .splits import DataSplits

__all__ = ["data_fingerprint", "source_hash"]

_SOURCE_HASHES: dict[tuple, str] = {}  # (id, stat key) -> hash of sources already hashed in this process


def source_hash(ds: ImageDataset) -> str:
    """SHA-1 of every image and label of ``ds``'s source (file bytes for data sets read from files)."""
    src = ds.source
    h = hashlib.sha1()
    if isinstance(src, torch.Tensor):
        h.update(str((src.dtype, tuple(src.shape))).encode())
        h.update(src.contiguous().cpu().numpy().tobytes())
    else:
        samples = getattr(src, "samples", None) or getattr(src, "imgs", None)
        files = [Path(p) for p, _ in samples] if samples else []
        key = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        if key and key in _SOURCE_HASHES:
            return _SOURCE_HASHES[key]
        with progress_bar(len(files), "hashing images (files)") as bar:
            for f in files:
                h.update(f"{f.parent.name}/{f.name}\0".encode())
                h.update(f.read_bytes())
                bar.update(1)
        if not files:  # a sequence we cannot read file by file: its length and labels
            h.update(str(len(src)).encode())
    h.update(ds._targets.numpy().tobytes())
    out = h.hexdigest()
    if not isinstance(src, torch.Tensor) and key:
        _SOURCE_HASHES[key] = out
    return out


def data_fingerprint(splits: DataSplits) -> str:
    """16 hex digits naming the images, the validation and test samples, and the model input."""
    h = hashlib.sha1()
    info = splits.info
    h.update(repr((info.num_classes, info.input_size, info.mean, info.std, info.resize)).encode())
    seen: dict[int, str] = {}
    for part in (splits.val, splits.test, splits.train_plain):
        if id(part.source) not in seen:
            seen[id(part.source)] = source_hash(part)
        h.update(seen[id(part.source)].encode())
        if part is not splits.train_plain:
            idx = part.indices if part.indices is not None else np.arange(len(part))
            h.update(np.asarray(idx, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]
