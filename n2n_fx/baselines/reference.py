"""The N2N run a baseline is compared with: its student's numbers, its config and its teacher.

The paper's baselines use the same trained teacher as N2N (§4.4) and stop or size
themselves by the N2N student (pruning: accuracy and parameter count; hand-made
students: parameter count). ``load_reference`` reads all of that from a finished run
directory of ``n2n-fx compress``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import RunDirError
from ..search import RunDir, SearchConfig
from ..search.api import load_teacher_file

__all__ = ["RunReference", "load_reference"]


@dataclass(frozen=True)
class RunReference:
    """The winning student of a finished N2N run, and what it was made from."""

    run_dir: Path  # the run directory
    config: SearchConfig  # the run's resolved config (data set, seed, budgets)
    teacher: nn.Module  # the run's teacher (eval mode)
    teacher_params: int  # its parameters
    teacher_accuracy: float  # its test accuracy
    accuracy: float  # the student's validation accuracy (what pruning's stopping rule reads)
    test_accuracy: float  # the student's test accuracy (what tables report)
    params: int  # the student's parameters


def load_reference(run_dir: str | Path, *, allow_pickle: bool = False) -> RunReference:
    """Read the winning student, config and teacher of a finished ``n2n-fx compress`` run.

    Example:
        >>> import tempfile
        >>> from torch import nn
        >>> from n2n_fx.data import load_splits
        >>> from n2n_fx.search import compress
        >>> s = load_splits("synthetic", num_samples=200, image_size=8)
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(8, 10))
        >>> run = Path(tempfile.mkdtemp()) / "run"
        >>> _ = compress(net, s.train_plain, s.val, run_dir=run, removal_iterations=1, shrink_iterations=1,
        ...              rollouts=2, reward_steps=2, final_epochs=1, supernet_steps=2,
        ...              supernet_shrink_steps=2, reward_accuracy="ratio", quiet=True)
        >>> ref = load_reference(run)
        >>> ref.teacher_params, ref.config.dataset, ref.params <= ref.teacher_params
        (170, 'custom', True)
    """
    run = RunDir.open(run_dir)
    if not run.file("summary.json").is_file():
        raise RunDirError(f"{run.path} has no summary.json; finish it with n2n-fx compress --resume")
    summary: dict[str, Any] = run.read_json("summary.json")
    key = summary.get("winner", "stage2")
    student = summary.get(key) or summary.get("stage1")
    if not student:
        raise RunDirError(f"{run.path}/summary.json names no trained student")
    cfg = SearchConfig.from_dict(run.read_json("config.json"))
    teacher, _ = load_teacher_file(run, allow_pickle)
    t = summary["teacher"]
    val = student.get("val_accuracy")
    return RunReference(
        run_dir=run.path,
        config=cfg,
        teacher=teacher,
        teacher_params=int(t["params"]),
        teacher_accuracy=float(t.get("test_accuracy", math.nan)),
        accuracy=float(val if val is not None else student["test_accuracy"]),
        test_accuracy=float(student["test_accuracy"]),
        params=int(student["params"]),
    )
