"""What one search stage supplies to the stage loop (``stages.py``): the ``Stage`` protocol.

A stage acts on one analysed graph (the teacher, or the base a shrink stage starts from) and says
which policy samples its actions (``kind``: the registered policy kinds, ``policy.registry``;
``policy_type``: the name; ``pretrained``: a saved policy to start from; ``lr``), the policy's
inputs, how one sampled rollout decodes into surgery actions (taken from the teacher, so a
student can be rebuilt from them alone), what the history records of them, and how the actions
become a student by surgery (``kd`` reward mode; the shared modes ask the supernet instead). The
loop itself never asks which stage it runs.

The stages: ``removal`` (paper stage 1: keep or remove each layer), ``shrink`` (stage 2, on stage
1's winner) and ``shrink_teacher`` (stage 2 on the teacher's full depth): ``make_stage`` builds each
from the run's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..features import RATIOS, policy_input, removal_mask, shrink_input, shrink_steps
from ..features.features import ShrinkStep
from ..graph.layers import Analysis
from ..policy import REMOVE
from ..rewrite import Rewrite, apply_actions
from .config import SearchConfig

__all__ = ["RemovalStage", "ShrinkStage", "Stage", "make_stage"]


class Stage(Protocol):
    """One stage of the search, as the stage loop uses it."""

    name: str  # "removal", "shrink", "shrink_teacher": its phase, checkpoint key and history "stage"
    kind: str  # the kind of policy that samples its actions ("removal" or "shrink")
    policy_type: str  # the registered policy's name (SearchConfig.removal_policy_type / shrink_policy_type)
    pretrained: str | None  # a saved policy to start from (transfer), or None
    lr: float  # Adam lr of its policy
    iterations: int  # policy updates (N1 or N2)
    analysis: Analysis  # the graph it acts on

    def inputs(self) -> dict[str, torch.Tensor] | None:
        """The policy's inputs by name, or None when there is nothing to decide."""
        ...

    def decode(self, actions: torch.Tensor) -> dict[str, Any]:
        """One rollout's actions ``(T,)`` as surgery actions from the teacher (``{"remove": ..., "shrink": ...}``)."""
        ...

    def recorded(self, acts: dict[str, Any]) -> Any:
        """What history.jsonl's ``actions`` holds of ``acts``."""
        ...

    def rewrite(self, acts: dict[str, Any], max_linear_growth: float) -> Rewrite:
        """The surgery on ``analysis`` that makes ``acts``' student (invalid ones: degenerate)."""
        ...


@dataclass
class RemovalStage:
    """Stage 1: keep or remove each layer of the teacher (paper §3.2.1)."""

    analysis: Analysis
    policy_type: str
    pretrained: str | None
    lr: float
    iterations: int
    passive: bool = False  # passive layers (norms, activations, ...) are removable too
    name: str = "removal"
    kind: str = "removal"

    def inputs(self) -> dict[str, torch.Tensor]:
        layers = self.analysis.layers
        return {"x": policy_input(layers), "removable": removal_mask(layers, passive=self.passive)}

    def decode(self, actions: torch.Tensor) -> dict[str, Any]:
        layers = self.analysis.layers
        return {"remove": [layers[i].node for i in range(len(layers)) if int(actions[i]) == REMOVE]}

    def recorded(self, acts: dict[str, Any]) -> Any:
        return acts.get("remove")

    def rewrite(self, acts: dict[str, Any], max_linear_growth: float) -> Rewrite:
        return apply_actions(self.analysis, remove=acts["remove"], strict=False, max_linear_growth=max_linear_growth)


@dataclass
class ShrinkStage:
    """Stage 2: a ratio per shrink variable of a base (stage 1's winner, or the teacher) (paper §3.2.2)."""

    name: str  # "shrink" or "shrink_teacher"
    analysis: Analysis  # the base's layers
    base_actions: dict[str, Any]  # the actions that made the base from the teacher ({"remove": [...]})
    policy_type: str
    pretrained: str | None
    lr: float
    iterations: int
    kernels: bool = True  # kernel sizes are shrink variables too (SearchConfig.shrink_kernels)
    kind: str = "shrink"
    steps: list[ShrinkStep] = field(init=False)  # one per shrink variable of the base's layers

    def __post_init__(self) -> None:
        self.steps = shrink_steps(self.analysis.layers, RATIOS, kernels=self.kernels)

    def inputs(self) -> dict[str, torch.Tensor] | None:
        if not self.steps:
            return None
        x, variable, legal = shrink_input(self.analysis.layers, self.steps)
        return {"x": x, "variable": variable, "legal": legal}

    def decode(self, actions: torch.Tensor) -> dict[str, Any]:
        shrink: dict[str, dict[str, float]] = {}
        for step, a in zip(self.steps, actions.tolist(), strict=True):
            shrink.setdefault(step.node, {})[step.variable] = RATIOS[a]
        return {**self.base_actions, "shrink": shrink}

    def recorded(self, acts: dict[str, Any]) -> Any:
        return acts["shrink"]

    def rewrite(self, acts: dict[str, Any], max_linear_growth: float) -> Rewrite:
        # the base already lacks the removed layers: only the shrink is done on it
        return apply_actions(self.analysis, shrink=acts["shrink"], strict=False, max_linear_growth=max_linear_growth)


def make_stage(name: str, cfg: SearchConfig, analysis: Analysis, base_actions: dict[str, Any]) -> Stage:
    """The stage ``name`` of a run with ``cfg``, acting on ``analysis`` (made from the teacher by ``base_actions``)."""
    if name == "removal":
        return RemovalStage(
            analysis,
            policy_type=cfg.removal_policy_type,
            pretrained=cfg.removal_policy,
            lr=cfg.removal_lr,
            iterations=cfg.removal_iterations,
            passive=cfg.remove_passive,
        )
    return ShrinkStage(
        name,
        analysis,
        base_actions,
        policy_type=cfg.shrink_policy_type,
        pretrained=cfg.shrink_policy,
        lr=cfg.shrink_lr,
        iterations=cfg.shrink_iterations,
        kernels=cfg.shrink_kernels,
    )
