"""What a resume may change: a run keeps its settings, but for budgets raised before they are spent.

A resumed run continues the search its config describes; a setting that differs from the
recorded one would make its history a mix of two runs, so it is refused (``ConfigError``, one
line naming the flag and the recorded value). Two kinds of change pass, and are recorded:
``EXTENSIONS``, budgets raised while the part of the run they size has not finished (raising
the iterations also stretches the constraint penalty's annealing horizon, N1 + N2, for the
iterations still to come), and ``RELOCATABLE``, where the run finds its data and trains its
students, which a resume on another machine may need to change.

Example, a run stopped in its removal stage::

    cfg, notes = resumed_config(RunDir.open("runs/r"), {"removal_iterations": 80})
    notes  # ['removal_iterations 60 -> 80']; with {"reward_lr": 0.5}: ConfigError
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..rundir import RunDir, safe_torch_load
from .config import SearchConfig
from .state import CKPT_FORMAT

__all__ = ["EXTENSIONS", "RELOCATABLE", "resumed_config"]

# field -> (the stages of `stage` that run it, the checkpoint phases in which raising it still takes effect)
EXTENSIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "removal_iterations": (("removal", "both"), ("removal",)),
    "shrink_iterations": (("shrink", "both"), ("removal", "shrink")),
    "final_epochs": (("removal", "shrink", "both"), ("removal", "shrink", "shrink_teacher", "final")),
}
# where the data is read from and who trains the students: not what the run computes
RELOCATABLE = ("data_root", "download", "executor", "workers", "ray_address")


def resumed_config(run: RunDir, asked: dict[str, Any]) -> tuple[SearchConfig, list[str]]:
    """The config ``run`` resumes with, given the settings ``asked`` for, and what they extended.

    ``asked`` maps SearchConfig fields to values (flags, a config file); values equal to the
    recorded ones are fine, raised ``EXTENSIONS`` are applied while their part of the run is
    ahead, ``RELOCATABLE`` ones are applied, anything else raises ``ConfigError``. The notes
    say what changed (``"extended removal_iterations 60 -> 80"``)."""
    recorded = SearchConfig.from_dict(run.config())
    SearchConfig.from_dict({**recorded.to_dict(), **asked})  # unknown keys and bad values: their own errors
    phase, trained = _progress(run)
    changes: dict[str, Any] = {}
    for name, value in asked.items():
        old = getattr(recorded, name)
        if value == old:
            continue
        why = _refusal(name, value, old, recorded.stage, phase, trained)
        if why:
            conflict = (
                f"--{name.replace('_', '-')} {_shown(value)} conflicts with the run's recorded {name}={_shown(old)}"
            )
            raise ConfigError(f"{conflict}: {why}")
        changes[name] = value
    notes = [
        f"{'extended' if name in EXTENSIONS else 'changed'} {name} {_shown(getattr(recorded, name))} -> {_shown(value)}"
        for name, value in changes.items()
    ]
    return recorded.replace(**changes), notes


def _refusal(name: str, value: Any, old: Any, stage: str, phase: str | None, trained: bool) -> str | None:
    """Why ``name`` cannot go from ``old`` to ``value`` on this resume, or None when it can."""
    if name in RELOCATABLE:
        return None
    if name not in EXTENSIONS:
        return (
            f"a resume keeps the run's settings (drop the flag, or start a new run); only {', '.join(EXTENSIONS)} "
            "can be raised"
        )
    stages, phases = EXTENSIONS[name]
    if value < old:
        return "a resume can only raise it"
    if stage not in stages:
        return f"stage {stage} does not use it"
    if phase is not None and (phase not in phases or (name == "final_epochs" and trained)):
        return "the run has finished" if phase == "done" else "that part of the run is over"
    return None


def _progress(run: RunDir) -> tuple[str | None, bool]:
    """The phase of the run's last checkpoint (None: not started) and whether a final training ran."""
    if not run.started:
        return None, False
    ck = safe_torch_load(run.file("checkpoint.pt"))
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{run.file('checkpoint.pt')} is not a search checkpoint of this version")
    trained = any(stage in ck.get("final", {}) for stage in ("removal", "shrink"))
    return str(ck["phase"]), trained


def _shown(value: Any) -> str:
    """A value as the command line writes it (None: none, a dict: JSON)."""
    if value is None:
        return "none"
    if isinstance(value, (dict, list, bool)):
        return json.dumps(value)
    return str(value)
