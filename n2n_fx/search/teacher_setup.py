"""Get the teacher and data of a run: a checkpoint, or a small teacher trained once and cached."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DataSplits, load_splits
from ..data.fingerprint import data_fingerprint
from ..errors import CheckpointError, ConfigError, DiskError
from ..teacher.quality import majority_accuracy, teacher_warning
from ..teacher.train import (
    PRESETS,
    check_teacher_data,
    data_identity,
    load_teacher,
    save_teacher,
    teacher_spec,
    train_teacher,
)
from ..teacher.zoo import build_model
from .config import SearchConfig

__all__ = ["PreparedTeacher", "prepare", "teacher_cache_dir"]

logger = logging.getLogger(__name__)


@dataclass
class PreparedTeacher:
    model: nn.Module  # trained teacher, eval mode
    spec: dict[str, Any]  # model, num_classes, in_channels, input_size (rebuild with build_model)
    metrics: dict[str, Any]  # what its training reported
    splits: DataSplits  # the run's data
    source: str  # where the teacher came from (checkpoint path, cache path)


def teacher_cache_dir() -> Path:
    base = os.environ.get("N2N_FX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "n2n_fx"
    )
    return Path(base) / "teachers"


# the main job's embedded data set: ~2k training images, 2000 test images (a 1-point drop is 20 images)
SYNTHETIC_DEFAULTS = {"num_samples": 2400, "num_test": 2000}


def dataset_options(cfg: SearchConfig) -> dict:
    """The options ``load_splits`` gets: the config's, or the data set's defaults."""
    if cfg.dataset_options is not None:
        return dict(cfg.dataset_options)
    return dict(SYNTHETIC_DEFAULTS) if cfg.dataset == "synthetic" else {}


def load_data(cfg: SearchConfig) -> DataSplits:
    opts = dataset_options(cfg)
    return load_splits(cfg.dataset, cfg.data_root, cfg.download, seed=cfg.seed, **opts)


def teacher_recipe(cfg: SearchConfig):
    """The recipe of a teacher trained on the fly: ``plateau`` with the run's cap and patience."""
    from dataclasses import replace

    return replace(PRESETS["plateau"], epochs=cfg.teacher_epochs, patience=cfg.teacher_patience)


def prepare(cfg: SearchConfig) -> PreparedTeacher:
    """Load the data, then the teacher from ``cfg.teacher_checkpoint`` or the cache (training it once).

    Logs the data (classes, input, split sizes) and a warning when the teacher is weak."""
    if cfg.teacher_checkpoint:
        t = load_teacher(cfg.teacher_checkpoint)  # fail fast on a bad file, before loading data
        if t.spec["model"] != cfg.model:
            raise ConfigError(
                f"{cfg.teacher_checkpoint} holds a {t.spec['model']} teacher, but the model is {cfg.model}; "
                f"pass --model {t.spec['model']} (model = {t.spec['model']!r} in a config file)"
            )
    else:
        build_model(cfg.model)  # fail fast on an unknown model name
    splits = load_data(cfg)
    logger.info(f"data: {splits.describe()}")
    prepared = _teacher(cfg, splits)
    metrics = prepared.metrics
    metrics.setdefault("majority_accuracy", majority_accuracy(splits.val))
    warning = teacher_warning(metrics)
    if warning:
        metrics["warning"] = warning
        logger.warning(warning)
    return prepared


def _teacher(cfg: SearchConfig, splits: DataSplits) -> PreparedTeacher:
    if cfg.teacher_checkpoint:
        t = load_teacher(cfg.teacher_checkpoint)
        if int(t.spec["num_classes"]) != splits.num_classes or tuple(t.spec["input_size"])[0] != splits.in_channels:
            raise CheckpointError(
                f"{cfg.teacher_checkpoint} was trained for {t.spec['num_classes']} classes / input {tuple(t.spec['input_size'])}, "
                f"but {cfg.dataset} has {splits.num_classes} classes / input {splits.input_size}; train a teacher for this data set"
            )
        check_teacher_data(cfg.teacher_checkpoint, t.data, splits)
        return PreparedTeacher(t.model, dict(t.spec), dict(t.metrics), splits, str(cfg.teacher_checkpoint))
    recipe = teacher_recipe(cfg)
    key = json.dumps(
        {
            "model": cfg.model,
            "dataset": cfg.dataset,
            "options": dataset_options(cfg),
            "data": data_fingerprint(splits),  # images, val/test split, input size
            "train": len(splits.train),
            "seed": cfg.seed,
            "recipe": str(recipe),
            "v": 3,  # 3: the model is built after seeding, trained until its validation accuracy plateaus
        },
        sort_keys=True,
    )
    stem = f"{cfg.model}-{cfg.dataset.partition(':')[0]}"
    path = teacher_cache_dir() / f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"
    logger.debug("teacher cache entry %s for %s", path, key)
    if path.is_file():
        try:
            t = load_teacher(path)
            logger.info(
                f"teacher: {cfg.model} from cache {path} (val acc {t.metrics.get('val_accuracy', float('nan')):.4f})"
            )
            return PreparedTeacher(t.model, dict(t.spec), dict(t.metrics), splits, str(path))
        except CheckpointError:
            path.unlink(missing_ok=True)  # an unreadable cache entry is rebuilt
    logger.info(
        f"teacher: training {cfg.model} until validation accuracy plateaus (at most {recipe.epochs} epochs; "
        f"cached in {path.parent})"
    )
    torch.manual_seed(cfg.seed)  # its initial weights: the same seed gives the same teacher
    model = build_model(cfg.model, num_classes=splits.num_classes, in_channels=splits.in_channels)
    model, metrics = train_teacher(model, splits, recipe, seed=cfg.seed, device=cfg.resolved_device())
    logger.info(
        f"teacher: val acc {metrics['val_accuracy']:.4f}, test acc {metrics['test_accuracy']:.4f} "
        f"(best of {metrics['epochs']} epochs: {metrics['best_epoch']}, stopped by {metrics['stopped']})"
    )
    model.cpu()
    try:
        save_teacher(
            path,
            model,
            model_name=cfg.model,
            num_classes=splits.num_classes,
            in_channels=splits.in_channels,
            input_size=splits.input_size,
            metrics=metrics,
            dataset=cfg.dataset,
            data=data_identity(splits),
        )
    except DiskError as e:  # the cache only saves time: the run goes on without it
        logger.warning(f"teacher: not cached ({e})")
    spec = teacher_spec(cfg.model, splits.num_classes, splits.in_channels, splits.input_size, cfg.dataset)
    return PreparedTeacher(model.eval(), spec, metrics, splits, str(path))
