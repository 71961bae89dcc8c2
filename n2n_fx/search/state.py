"""The search's state between iterations: its stages and phases, each stage's best student, and
the checkpoint that holds them (written after every iteration, read on resume)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..rundir import safe_torch_load
from ..storage import atomic_torch_save

__all__ = ["CKPT_FORMAT", "FINAL_NAMES", "PHASES", "STAGE_ORDER", "SearchState", "StageBest", "best_key"]

CKPT_FORMAT = "n2n_fx.search-checkpoint/1"
# the search's stages in order: removal, shrink of stage 1's winner, shrink of the teacher itself
# (``shrink_teacher``: stage 2 over the full depth too; its best competes for the stage-2 student)
STAGE_ORDER = ("removal", "shrink", "shrink_teacher")
PHASES = (*STAGE_ORDER, "final", "done")
# the final student of each best (best_key): its summary.json key, and its files student_<key>.pt/.py/_diff.*
FINAL_NAMES = {"removal": "stage1", "shrink": "stage2"}


def best_key(stage: str) -> str:
    """Which best a stage competes for: stage 1's, or stage 2's (both shrink stages)."""
    return "removal" if stage == "removal" else "shrink"


@dataclass
class StageBest:
    """The best student a stage found so far."""

    reward: float  # its reward
    record: dict[str, Any]  # its reward record (as dict)
    actions: dict[str, Any]  # {"remove": [...]} and/or {"shrink": {...}} from the teacher
    state_dict: dict[str, torch.Tensor] | None = None  # its weights after KD evaluation

    def to_state(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "record": self.record,
            "actions": self.actions,
            "state_dict": self.state_dict,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any] | None) -> StageBest | None:
        return None if d is None else cls(d["reward"], d["record"], d["actions"], d.get("state_dict"))


@dataclass
class SearchState:
    """Everything a resumed search needs: where it is, its learners, bests, teacher figures, final results."""

    phase: str = "removal"
    iteration: int = 0  # next iteration to run in ``phase``
    learners: dict[str, Any] = field(default_factory=dict)  # stage -> Learner.state_dict()
    best: dict[str, StageBest | None] = field(default_factory=lambda: {"removal": None, "shrink": None})
    teacher: dict[str, Any] = field(default_factory=dict)  # val/test accuracy, params, flops
    final: dict[str, Any] = field(default_factory=dict)  # final-training results per stage
    supernet: dict[str, Any] = field(default_factory=dict)  # supernet training record (shared modes)
    keep_bias: dict[str, float] = field(default_factory=dict)  # shrink stage -> its measured start (max_params)

    def save(self, path: Path) -> None:
        """Write the state and torch's RNG state atomically (the iteration is committed by this write)."""
        atomic_torch_save(
            {
                "format": CKPT_FORMAT,
                "phase": self.phase,
                "iteration": self.iteration,
                "learners": self.learners,
                "best": {k: (v.to_state() if v else None) for k, v in self.best.items()},
                "teacher": self.teacher,
                "final": self.final,
                "supernet": self.supernet,
                "keep_bias": self.keep_bias,
                "torch_rng": torch.get_rng_state(),
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> SearchState:
        """The state saved at ``path``; torch's RNG state is restored as it was saved."""
        ck = safe_torch_load(path)
        if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
            raise CheckpointError(f"{path} is not a search checkpoint of this version")
        torch.set_rng_state(ck["torch_rng"])
        return cls(
            phase=ck["phase"],
            iteration=int(ck["iteration"]),
            learners=ck["learners"],
            best={k: StageBest.from_state(v) for k, v in ck["best"].items()},
            teacher=ck["teacher"],
            final=ck.get("final", {}),
            supernet=ck.get("supernet", {}),
            keep_bias=ck.get("keep_bias", {}),
        )
