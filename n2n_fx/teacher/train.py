"""Train a teacher with the paper's per-data-set recipe (appendix 10.2), save and load its checkpoint.

The paper gives epochs, learning rate, decay epochs and batch size but not the optimiser;
its presets here use SGD with momentum 0.9 and weight decay 5e-4 (step decay by 10 is an
SGD schedule). The ``cpu`` preset (3 epochs of Adam at 1e-3) makes a usable teacher in
minutes on a laptop.

A checkpoint is ``{"state_dict", "spec": {"model", "num_classes", "in_channels",
"input_size", "dataset"}, "metrics"}``, readable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.fingerprint import data_fingerprint
from ..data.loaders import make_loader
from ..data.splits import DataSplits
from ..distill.evaluate import accuracy
from ..errors import CheckpointError, ConfigError, N2NError
from ..progress import progress_bar
from ..storage import atomic_torch_save
from .quality import majority_accuracy
from .zoo import build_model

__all__ = [
    "TeacherPreset",
    "PRESETS",
    "preset_for",
    "teacher_spec",
    "train_teacher",
    "save_teacher",
    "load_teacher",
    "LoadedTeacher",
    "data_identity",
    "check_teacher_data",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherPreset:
    """A teacher training recipe."""

    name: str  # preset name
    epochs: int  # passes over the training split
    lr: float  # initial learning rate
    milestones: tuple[int, ...] = ()  # epochs after which the learning rate is multiplied by gamma
    gamma: float = 0.1  # learning-rate decay factor at each milestone
    batch_size: int = 64  # training batch size
    optimizer: str = "sgd"  # "sgd" (momentum below) or "adam"
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 weight decay
    augment: bool = True  # use the data set's training augmentation
    # early stopping: after this many epochs without a better validation accuracy, drop the lr by
    # gamma (plateau_drops times) and then stop; the best epoch's weights are kept (0: run every epoch)
    patience: int = 0
    plateau_drops: int = 1  # learning-rate drops on a plateau before stopping (with patience > 0)

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.lr <= 0 or self.batch_size <= 0:
            raise ConfigError(f"preset {self.name!r}: epochs, lr and batch_size must be positive")
        if self.patience < 0 or self.plateau_drops < 0:
            raise ConfigError(f"preset {self.name!r}: patience and plateau_drops must be >= 0")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"preset {self.name!r}: optimizer must be 'sgd' or 'adam'")


# preset name -> recipe; "mnist", "cifar" and "caltech256" follow the paper's appendix 10.2
PRESETS = {
    "mnist": TeacherPreset("mnist", epochs=50, lr=0.01, milestones=(30,), batch_size=64),
    "cifar": TeacherPreset("cifar", epochs=150, lr=0.001, milestones=(80, 120), batch_size=128),
    "caltech256": TeacherPreset("caltech256", epochs=50, lr=0.01, batch_size=64),
    "cpu": TeacherPreset("cpu", epochs=3, lr=1e-3, batch_size=64, optimizer="adam", weight_decay=0.0),
    # until validation accuracy plateaus: Adam 1e-3, lr / 10 after 3 epochs without progress,
    # stop after 3 more, at most 30 epochs; the best validation epoch is kept (compress's teacher)
    "plateau": TeacherPreset(
        "plateau", epochs=30, lr=1e-3, batch_size=64, optimizer="adam", weight_decay=0.0, patience=3
    ),
}

# data set -> paper preset (data sets the paper does not use get the MNIST recipe)
_PAPER_PRESET = {
    "mnist": "mnist",
    "mnist10k": "mnist",
    "cifar10": "cifar",
    "cifar100": "cifar",
    "svhn": "cifar",
    "caltech256": "caltech256",
    "imagefolder": "caltech256",
}


def preset_for(dataset: str, kind: str = "paper") -> TeacherPreset:
    """The ``paper`` recipe of ``dataset`` (MNIST's for data sets the paper lacks), or the ``cpu`` one.


    Example:
        >>> preset_for("cifar10").milestones
        (80, 120)
    """
    if kind == "cpu":
        return PRESETS["cpu"]
    if kind != "paper":
        raise ConfigError(f"unknown preset kind {kind!r}; use 'paper' or 'cpu'")
    return PRESETS[_PAPER_PRESET.get(dataset.partition(":")[0], "mnist")]


def _optimizer(model: nn.Module, p: TeacherPreset) -> torch.optim.Optimizer:
    params = [q for q in model.parameters() if q.requires_grad]
    if p.optimizer == "adam":
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)


def train_teacher(
    model: nn.Module,
    splits: DataSplits,
    preset: str | TeacherPreset = "cpu",
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``model`` with cross-entropy on ``splits.train``; report validation and test accuracy.

    ``preset`` is a ``TeacherPreset``, a key of ``PRESETS``, or ``"paper"`` (the recipe of
    ``splits``' data set). ``epochs``/``lr``/``batch_size`` override it. Returns the model
    (eval mode) and metrics: ``val_accuracy``, ``test_accuracy``, ``train_loss``,
    ``epochs``, ``wall_s``, ``params``, ``preset``. Raises ConfigError if the loss diverges.
    Each epoch is logged (INFO, logger ``n2n_fx.teacher.train``) and the batches drawn as a progress bar.

    Example:
        >>> from n2n_fx.data import load_splits
        >>> splits = load_splits("synthetic", num_samples=200, image_size=16)
        >>> _, m = train_teacher(build_model("vgg_tiny", in_channels=1), splits, epochs=1)
        >>> sorted(m)[:3]
        ['best_epoch', 'dataset', 'epochs']
    """
    if isinstance(preset, str):
        p = preset_for(splits.info.name) if preset == "paper" else PRESETS.get(preset)
        if p is None:
            raise ConfigError(f"unknown teacher preset {preset!r}; use 'paper' or one of {sorted(PRESETS)}")
    else:
        p = preset
    overrides = {k: v for k, v in dict(epochs=epochs, lr=lr, batch_size=batch_size).items() if v is not None}
    p = replace(p, **overrides)
    logger.debug(f"teacher recipe: {p}")
    device = torch.device(device)
    torch.manual_seed(seed)  # dropout and augmentation draws
    start = time.perf_counter()
    model.to(device)
    train_set = splits.train if p.augment else splits.train_plain
    loader = make_loader(train_set, p.batch_size, shuffle=True, seed=seed, device=device)
    optimizer = _optimizer(model, p)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(p.milestones), gamma=p.gamma)
    has_val = len(splits.val) > 0
    if p.patience and not has_val:
        raise ConfigError("early stopping (patience) needs a validation split; give val_size > 0")
    val_acc = float("nan")
    mean_loss = float("nan")
    history: list[float] = []  # validation accuracy after each epoch
    best_acc, best_epoch, best_state = -1.0, 0, None
    waited, drops, stopped = 0, 0, "cap"
    epoch = 0
    bar = progress_bar(p.epochs * len(loader), "teacher training (batches)")  # the cap: plateau may stop earlier
    for epoch in range(1, p.epochs + 1):
        model.train()
        total, n = torch.zeros((), device=device), 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)  # logits (batch, n_classes)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            n += 1
            bar.update(1)
        schedule.step()
        mean_loss = float(total) / max(n, 1)
        if not math.isfinite(mean_loss):
            bar.close()
            raise ConfigError(f"teacher training diverged in epoch {epoch} (loss {mean_loss}); lower --lr")
        if has_val:
            val_acc = accuracy(model, splits.val, device=device)
            history.append(val_acc)
        logger.info(
            f"teacher epoch {epoch}/{p.epochs}: loss {mean_loss:.4f}" + (f", val acc {val_acc:.4f}" if has_val else "")
        )
        if not p.patience:
            continue
        if val_acc > best_acc:
            best_acc, best_epoch, waited = val_acc, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            continue
        waited += 1
        if waited < p.patience:
            continue
        if drops >= p.plateau_drops:
            stopped = "plateau"
            break
        drops, waited = drops + 1, 0
        for group in optimizer.param_groups:
            group["lr"] *= p.gamma
        logger.info(f"teacher: validation accuracy plateaued: learning rate x{p.gamma:g}")
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
        val_acc = best_acc
    test_acc = accuracy(model, splits.test, device=device) if len(splits.test) else float("nan")
    model.eval()
    metrics = {
        "val_accuracy": val_acc,
        "test_accuracy": test_acc,
        "train_loss": mean_loss,
        "epochs": epoch,
        "max_epochs": p.epochs,
        "best_epoch": best_epoch if p.patience else epoch,
        "stopped": stopped if p.patience else "epochs",
        "val_history": history,
        "majority_accuracy": majority_accuracy(splits.val),
        "wall_s": time.perf_counter() - start,
        "params": sum(q.numel() for q in model.parameters() if q.requires_grad),
        "preset": p.name,
        "dataset": splits.info.name,
        "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(p).items()},
    }
    return model, metrics


def teacher_spec(
    model_name: str, num_classes: int, in_channels: int, input_size: tuple[int, ...], dataset: str | None
) -> dict[str, Any]:
    """What ``load_teacher`` needs to rebuild a teacher with ``build_model`` (stored beside its weights)."""
    return {
        "model": model_name,
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "input_size": tuple(int(d) for d in input_size),
        "dataset": dataset,
    }


def save_teacher(
    path: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, ...],
    metrics: dict[str, Any] | None = None,
    dataset: str | None = None,
    data: dict[str, Any] | None = None,
) -> Path:
    """Write a teacher checkpoint that ``load_teacher`` rebuilds with ``build_model(model_name, ...)``.

    ``data`` identifies the data it was trained on (``data_identity``), so a run can check it."""
    path = Path(path)
    spec = teacher_spec(model_name, num_classes, in_channels, input_size, dataset)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(
        {"state_dict": state, "spec": spec, "metrics": dict(metrics or {}), "data": dict(data or {})}, path
    )
    return path


def data_identity(splits: DataSplits) -> dict[str, Any]:
    """What a teacher checkpoint records about its data: name, fingerprint, seed, input size."""
    return {
        "dataset": splits.info.name,
        "fingerprint": data_fingerprint(splits),
        "seed": int(splits.seed),
        "input_size": list(splits.input_size),
    }


def check_teacher_data(path: str | Path, recorded: dict[str, Any], splits: DataSplits) -> None:
    """CheckpointError (one line) when a teacher was trained on other data or splits than ``splits``.

    Checkpoints without a record (older files) pass; the input size is checked by the caller."""
    if not recorded:
        return
    now = data_identity(splits)
    hint = "train one on this data (n2n-fx train-teacher ... with the run's --seed and data options)"
    if list(recorded.get("input_size", now["input_size"])) != now["input_size"]:
        raise CheckpointError(
            f"{path} was trained on {'x'.join(map(str, recorded['input_size']))} inputs, this run's are "
            f"{'x'.join(map(str, now['input_size']))}; {hint} or pass the image_size it used"
        )
    if int(recorded.get("seed", now["seed"])) != now["seed"]:
        raise CheckpointError(
            f"{path} was trained with seed {recorded['seed']}, whose validation/test split differs from this run's "
            f"(seed {now['seed']}); run with --seed {recorded['seed']} or {hint}"
        )
    if recorded.get("fingerprint", now["fingerprint"]) != now["fingerprint"]:
        raise CheckpointError(
            f"{path} was trained on other images or splits ({recorded.get('dataset')}) than this run's "
            f"({now['dataset']}), so its accuracy here may be measured on images it trained on; {hint}"
        )


@dataclass(frozen=True)
class LoadedTeacher:
    """A teacher rebuilt from its checkpoint."""

    model: nn.Module  # the model with its trained weights, in eval mode
    spec: dict[str, Any]  # model, num_classes, in_channels, input_size (C, H, W), dataset
    metrics: dict[str, Any]  # what training reported (val_accuracy, test_accuracy, ...)
    data: dict[str, Any] = field(default_factory=dict)  # data_identity of its training data ({} for old files)

    @property
    def input_size(self) -> tuple[int, ...]:
        return tuple(self.spec["input_size"])


def load_teacher(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedTeacher:
    """Rebuild the model saved by ``save_teacher``; CheckpointError if the file is not one or does not fit.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "conv4.pt"
        >>> _ = save_teacher(path, build_model("conv4", in_channels=1), model_name="conv4", num_classes=10,
        ...                  in_channels=1, input_size=(1, 28, 28), metrics={"val_accuracy": 0.97})
        >>> t = load_teacher(path)
        >>> t.spec["model"], t.input_size, t.metrics["val_accuracy"], t.model.training
        ('conv4', (1, 28, 28), 0.97, False)
    """
    path = Path(path)
    hint = "re-create it with `n2n-fx train-teacher`"
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint {path} does not exist; {hint}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling raises many kinds
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}); {hint}") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "spec"} <= set(ckpt) or not isinstance(ckpt["spec"], dict):
        raise CheckpointError(f"{path} is not a teacher checkpoint (no state_dict/spec); {hint}")
    spec = dict(ckpt["spec"])
    missing = [k for k in ("model", "num_classes", "in_channels", "input_size") if k not in spec]
    if missing:
        raise CheckpointError(f"{path}: spec lacks {missing}; {hint}")
    try:
        model = build_model(
            str(spec["model"]),
            num_classes=int(spec["num_classes"]),
            in_channels=int(spec["in_channels"]),
        )
    except N2NError as e:
        raise CheckpointError(f"{path} names a model that cannot be built ({e}); {hint}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else type(e).__name__)
        raise CheckpointError(
            f"{path}: weights do not match model {spec['model']!r} ({detail[:160]}); {hint}"
        ) from None
    model.to(map_location).eval()
    return LoadedTeacher(
        model=model, spec=spec, metrics=dict(ckpt.get("metrics") or {}), data=dict(ckpt.get("data") or {})
    )
