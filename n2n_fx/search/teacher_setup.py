"""Get the teacher and data of a run: a checkpoint, or a small teacher trained once and cached."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DataSplits, load_splits
from ..errors import CheckpointError, ConfigError, DiskError
from ..teacher.train import load_teacher, save_teacher, teacher_spec, train_teacher
from ..teacher.zoo import build_model
from .config import SearchConfig

__all__ = ["PreparedTeacher", "prepare", "teacher_cache_dir"]


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


SYNTHETIC_DEFAULTS = {"num_samples": 2400}  # the main job's embedded data set: ~2k training images


def dataset_options(cfg: SearchConfig) -> dict:
    """The options ``load_splits`` gets: the config's, or the data set's defaults."""
    if cfg.dataset_options is not None:
        return dict(cfg.dataset_options)
    return dict(SYNTHETIC_DEFAULTS) if cfg.dataset == "synthetic" else {}


def load_data(cfg: SearchConfig) -> DataSplits:
    opts = dataset_options(cfg)
    return load_splits(cfg.dataset, cfg.data_root, cfg.download, seed=cfg.seed, **opts)


def prepare(cfg: SearchConfig, log=print) -> PreparedTeacher:
    """Load the data, then the teacher from ``cfg.teacher_checkpoint`` or the cache (training it once)."""
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
    if cfg.teacher_checkpoint:
        if int(t.spec["num_classes"]) != splits.num_classes or tuple(t.spec["input_size"])[0] != splits.in_channels:
            raise CheckpointError(
                f"{cfg.teacher_checkpoint} was trained for {t.spec['num_classes']} classes / input {tuple(t.spec['input_size'])}, "
                f"but {cfg.dataset} has {splits.num_classes} classes / input {splits.input_size}; train a teacher for this data set"
            )
        return PreparedTeacher(t.model, dict(t.spec), t.metrics, splits, str(cfg.teacher_checkpoint))
    key = json.dumps(
        {
            "model": cfg.model,
            "dataset": cfg.dataset,
            "options": dataset_options(cfg),
            "seed": cfg.seed,
            "epochs": cfg.teacher_epochs,
            "v": 2,  # 2: the model is built after seeding (v1 teachers differ from run to run)
        },
        sort_keys=True,
    )
    path = teacher_cache_dir() / f"{cfg.model}-{cfg.dataset}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"
    if path.is_file():
        try:
            t = load_teacher(path)
            log(f"teacher: {cfg.model} from cache {path}")
            return PreparedTeacher(t.model, dict(t.spec), t.metrics, splits, str(path))
        except CheckpointError:
            path.unlink(missing_ok=True)  # a corrupt cache entry is rebuilt
    log(f"teacher: training {cfg.model} on {cfg.dataset} for {cfg.teacher_epochs} epochs (cached in {path.parent})")
    torch.manual_seed(cfg.seed)  # its initial weights: the same seed gives the same teacher
    model = build_model(cfg.model, num_classes=splits.num_classes, in_channels=splits.in_channels)
    model, metrics = train_teacher(
        model, splits, "cpu", epochs=cfg.teacher_epochs, seed=cfg.seed, device=cfg.resolved_device()
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
        )
    except DiskError as e:  # the cache only saves time: the run goes on without it
        log(f"teacher: not cached ({e})")
    spec = teacher_spec(cfg.model, splits.num_classes, splits.in_channels, splits.input_size, cfg.dataset)
    return PreparedTeacher(model.eval(), spec, metrics, splits, str(path))
