"""Teacher logits computed once per training set and reused by every student (rollout).

Without augmentation a training sample always looks the same, so the teacher's logits for
it never change: computing them once saves one teacher forward per student batch.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import CheckpointError, ConfigError
from ..progress import progress_bar
from ..storage import atomic_torch_save
from .evaluate import EVAL_BATCH, predict_logits

__all__ = ["LogitCache", "IndexedDataset", "dataset_fingerprint"]

logger = logging.getLogger(__name__)


class IndexedDataset(Dataset):
    """Wrap a data set so that item ``i`` is ``(x, y, i)``: batches carry their sample positions."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.dataset[i][:2]
        return x, y, i


def dataset_fingerprint(dataset: Dataset) -> str:
    """Length plus a hash of the labels (``targets``) of ``dataset``: tells data sets apart cheaply."""
    h = hashlib.sha1(str(len(dataset)).encode())  # type: ignore[arg-type]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        h.update(torch.as_tensor(targets).long().cpu().numpy().tobytes())
    return f"n={len(dataset)}:{h.hexdigest()[:16]}"  # type: ignore[arg-type]


def _is_deterministic(dataset: Dataset, probes: int = 3) -> bool:
    """Whether reading the first samples twice gives the same tensors (no random augmentation)."""
    with torch.random.fork_rng(devices=[]):
        for i in range(min(probes, len(dataset))):  # type: ignore[arg-type]
            a, b = dataset[i][0], dataset[i][0]
            if isinstance(a, torch.Tensor) and not torch.equal(a, b):
                return False
    return True


@dataclass(frozen=True)
class LogitCache:
    """Teacher logits of every sample of one (un-augmented) training set.

    Example:
        >>> from n2n_fx.data import load_splits
        >>> splits = load_splits("synthetic", num_samples=60, image_size=8)
        >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> cache = LogitCache.build(teacher, splits.train_plain)
        >>> cache.logits.shape
        torch.Size([54, 10])
    """

    logits: torch.Tensor  # (N, n_classes) float32 on CPU, in the data set's sample order
    fingerprint: str  # dataset_fingerprint of the data set the logits belong to
    # device -> a copy of ``logits`` there (``on``): uploaded once, not per student; never pickled
    _copies: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {"logits": self.logits, "fingerprint": self.fingerprint}  # device copies stay here

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "logits", state["logits"])
        object.__setattr__(self, "fingerprint", state["fingerprint"])
        object.__setattr__(self, "_copies", {})

    def on(self, device: str | torch.device) -> torch.Tensor:
        """The logits on ``device``, copied there on the first call and kept.

        Example:
            >>> cache = LogitCache(torch.zeros(3, 2), "n=3")
            >>> cache.on("cpu") is cache.logits
            True
        """
        device = torch.device(device)
        if device == self.logits.device:
            return self.logits
        key = str(device)
        if key not in self._copies:
            self._copies[key] = self.logits.to(device)
        return self._copies[key]

    @classmethod
    def build(
        cls,
        teacher: nn.Module,
        dataset: Dataset,
        *,
        batch_size: int = EVAL_BATCH,
        device: str | torch.device | None = None,
    ) -> LogitCache:
        """Run ``teacher`` (eval mode, on ``device``) once over ``dataset``; refuse an augmented data set.

        The teacher goes back to where it was; the logits are kept on the CPU (``on`` copies them)."""
        if not _is_deterministic(dataset):
            raise ConfigError(
                "the data set given to the logit cache is randomly augmented; use the plain split "
                "(DataSplits.train_plain) or train without the cache"
            )
        with progress_bar(len(dataset), "teacher logits (samples)") as bar:  # type: ignore[arg-type]
            logits = predict_logits(teacher, dataset, batch_size=batch_size, device=device, on_batch=bar.update)
        logger.debug("teacher logits: %d samples cached, %d classes", *logits.shape)
        return cls(logits=logits, fingerprint=dataset_fingerprint(dataset))

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def check(self, dataset: Dataset) -> None:
        """Raise ConfigError if ``dataset`` is not the data set the cache was built on."""
        found = dataset_fingerprint(dataset)
        if found != self.fingerprint:
            raise ConfigError(
                f"logit cache was built for data set {self.fingerprint} but training uses {found}; "
                "rebuild the cache on the training set you pass"
            )

    def save(self, path: str | Path) -> None:
        """Write the cache with ``torch.save``, atomically (loadable with ``weights_only=True``)."""
        atomic_torch_save({"logits": self.logits, "fingerprint": self.fingerprint}, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> LogitCache:
        """Read a cache written by ``save``; CheckpointError if the file is not one."""
        try:
            data = torch.load(Path(path), map_location="cpu", weights_only=True)
            return cls(logits=data["logits"].float(), fingerprint=str(data["fingerprint"]))
        except Exception as e:
            raise CheckpointError(
                f"{path} is not a logit cache ({type(e).__name__}); delete it to rebuild the cache"
            ) from None
