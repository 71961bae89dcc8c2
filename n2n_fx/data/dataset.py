"""A labelled image data set with its description: one class for every source and split view."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError

__all__ = ["DatasetInfo", "ImageDataset", "no_options"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the split/transform code need to know about a data set."""

    name: str  # registry name, e.g. "cifar10" or "imagefolder:/data/birds"
    num_classes: int  # number of labels, 0..num_classes-1
    in_channels: int  # image channels after ToFloat (1 grey, 3 RGB)
    image_size: int  # height == width of transformed images
    mean: tuple[float, ...]  # per-channel mean subtracted by normalisation
    std: tuple[float, ...]  # per-channel divisor of normalisation
    augment: str = "none"  # training augmentation preset (see transforms.AUGMENTATIONS)
    resize: bool = False  # images vary in size and are resized/cropped to image_size
    has_test: bool = True  # an official test split exists (else load_splits carves one)
    has_val: bool = False  # an official validation split exists (else load_splits carves one from train)
    classes: tuple[str, ...] = ()  # class names by label, when the data set has them (image folders)
    default_val_size: int | float = 0.1  # validation carved from training: count or fraction
    default_test_size: int | float = 0.2  # test carved when has_test is False: count or fraction

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of a transformed image."""
        return (self.in_channels, self.image_size, self.image_size)


class ImageDataset(Dataset):
    """Labelled images: raw samples from ``source``, ``transform`` applied on access.

    ``source`` is either a tensor of images ``(N, C, H, W)`` (uint8 or float) or a sequence
    whose item ``i`` is ``(image, label)`` (a torchvision data set without transform).
    ``targets`` holds every source label ``(N,)``. A view (``view``) shares the source and
    sees only ``indices``, with its own transform, so train/validation splits and their
    augmented and plain versions never copy images.

    Example:
        >>> ds = ImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]),
        ...                   info=None)
        >>> len(ds.view([1, 3])), ds.view([1, 3]).targets.tolist()
        (2, [1, 1])
    """

    def __init__(
        self,
        source: torch.Tensor | Sequence[Any],
        targets: torch.Tensor,
        info: DatasetInfo | None,
        transform: Callable[[Any], torch.Tensor] | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.source = source
        self._targets = torch.as_tensor(targets, dtype=torch.long)  # (N,) labels of the whole source
        self.info = info
        self.transform = transform
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._targets) if self.indices is None else len(self.indices)

    def _source_index(self, i: int) -> int:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a data set of {len(self)}")
        return i if self.indices is None else int(self.indices[i])

    def __getitem__(self, i: int) -> tuple[Any, int]:
        j = self._source_index(int(i))
        x = self.source[j] if isinstance(self.source, torch.Tensor) else self.source[j][0]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self._targets[j])

    @property
    def targets(self) -> torch.Tensor:
        """Labels of this view, ``(len(self),)`` int64."""
        return self._targets if self.indices is None else self._targets[torch.from_numpy(self.indices)]

    def view(
        self,
        indices: Sequence[int] | np.ndarray | None = None,
        transform: Callable[[Any], torch.Tensor] | None | str = "same",
    ) -> ImageDataset:
        """A view of ``indices`` (positions in this view; None keeps all) with another transform."""
        if indices is None:
            new = self.indices
        else:
            idx = np.asarray(indices, dtype=np.int64)
            new = idx if self.indices is None else self.indices[idx]
        t = self.transform if isinstance(transform, str) and transform == "same" else transform
        return ImageDataset(self.source, self._targets, self.info, t, new)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        name = self.info.name if self.info else "images"
        return f"ImageDataset({name}, n={len(self)}, transform={self.transform!r})"


def no_options(name: str, options: dict) -> None:
    """Raise ``ConfigError`` if data set ``name`` was given options it does not take."""
    if options:
        raise ConfigError(f"data set {name!r} takes no options {sorted(options)}; remove them")
