"""Random search: the control for the RL search, with the same action spaces and rollout budget.

Stage 1 samples removal masks where every removable layer is removed with probability
``p_remove`` (the run's ``remove_prior``, 0.5 by default: what a fresh removal policy does); stage 2 samples a uniformly random
legal ratio for every shrink variable of the best stage-1 student. Everything else is the
N2N main job unchanged: the same surgery, the same ``RewardEvaluator`` (KD on cached
teacher logits), the same history rows, checkpoints, final CE + λ·KD training and report.
It is built by giving ``Search`` a learner that samples from a policy frozen at the
uniform distribution and never updates it, so the two searches differ only in learning.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..features import FEATURE_DIM, RATIOS
from ..policy import (
    Learner,
    LearnerConfig,
    RemovalPolicy,
    RemovalPolicyConfig,
    Rollout,
    ShrinkPolicy,
    ShrinkPolicyConfig,
    UpdateStats,
)
from ..search import CompressionResult, RunDir, SearchConfig
from ..search.api import run_compress
from ..search.search import Search
from ..search.stages import learner_seed

__all__ = ["RandomLearner", "RandomSearch", "run_random_search", "BASELINE_FILE"]

BASELINE_FILE = "baseline.json"  # marks a run directory as a baseline run (method, settings)


class RandomLearner(Learner):
    """A ``Learner`` whose policy is uniform and stays so: ``update`` only records the rewards.

    Removal: each removable layer is removed with probability ``p_remove``. Shrink: each
    variable gets a ratio drawn uniformly from its legal ratios. Sampling goes through the
    real policies' code (same masks, same generator seeding), so the action spaces are
    exactly those of the RL search.

    Example:
        >>> from n2n_fx import find_layers, trace
        >>> from n2n_fx.features import policy_input, removal_mask
        >>> layers = find_layers(trace("conv4", input_size=(1, 16, 16)))
        >>> inputs = {"x": policy_input(layers), "removable": removal_mask(layers)}
        >>> learner = RandomLearner("removal", LearnerConfig(rollouts=5, seed=0))
        >>> ro = learner.sample(**inputs)
        >>> tuple(ro.actions.shape) == (5, len(layers))
        True
        >>> round(learner.update(ro, [0.1, 0.5, 0.2, 0.9, 0.3], **inputs).mean_reward, 3)  # nothing learnt
        0.4
    """

    def __init__(self, stage: str, config: LearnerConfig, p_remove: float = 0.5) -> None:
        if stage == "removal":
            policy = RemovalPolicy(RemovalPolicyConfig(feature_dim=FEATURE_DIM, remove_prior=p_remove, init_scale=0.0))
        elif stage in ("shrink", "shrink_teacher"):
            policy = ShrinkPolicy(ShrinkPolicyConfig(feature_dim=FEATURE_DIM, ratios=RATIOS, init_scale=0.0))
        else:
            raise ConfigError(f"stage {stage!r} must be removal, shrink or shrink_teacher")
        super().__init__(policy, config)

    def update(self, actions: Rollout | torch.Tensor, rewards: Any, **inputs: Any) -> UpdateStats:
        """Record one batch of rewards; the policy is not changed (there is nothing to learn)."""
        r = torch.as_tensor(rewards, dtype=torch.float32).flatten()  # (m,)
        mean = float(r.mean()) if r.numel() else math.nan
        self.updates += 1
        nan = math.nan
        return UpdateStats(self.updates, mean, nan, 0.0, 0.0, nan, nan, 0.0)


class RandomSearch(Search):
    """``Search`` with random sampling instead of learned policies (same budget and rewards).

    ``run_random_search`` runs it as the main job does (example there).
    """

    def __init__(self, *args: Any, p_remove: float | None = None, **kwargs: Any) -> None:
        if p_remove is not None and not 0.0 < p_remove < 1.0:
            raise ConfigError(f"p_remove={p_remove} must be strictly between 0 and 1")
        super().__init__(*args, **kwargs)
        if self.cfg.removal_policy or self.cfg.shrink_policy:
            raise ConfigError("random search learns no policy; drop removal_policy/shrink_policy")
        self.p_remove = self.cfg.remove_prior if p_remove is None else p_remove  # a fresh policy's rate

    def _learner(self, stage: str) -> Learner:
        cfg = self.cfg
        seed = learner_seed(cfg.seed, stage)  # as Search: same first draws
        learner = RandomLearner(
            stage,
            LearnerConfig(lr=1e-3, rollouts=cfg.rollouts, seed=seed),
            p_remove=self.p_remove,
        )
        if stage in self.state.learners:
            learner.load_state_dict(self.state.learners[stage])
        return learner


def run_random_search(
    cfg: SearchConfig,
    run_dir: str | Path,
    *,
    p_remove: float | None = None,
    resume: bool = False,
    quiet: bool = False,
    teacher: torch.nn.Module | None = None,
    changes: dict[str, Any] | None = None,
) -> CompressionResult:
    """Random search over ``run_dir``: the N2N main job with the policies replaced by sampling.

    The run directory has the layout of ``n2n-fx compress`` (history.jsonl in the same row
    format, report.md, student*.pt) plus ``baseline.json``; ``n2n-fx report`` reads it.
    ``teacher`` (optional) replaces the teacher ``cfg`` would load, e.g. an N2N run's own;
    ``changes`` are the settings a resume asks for (``run_compress``).

    Example:
        >>> import tempfile
        >>> from n2n_fx.teacher.zoo import build_model
        >>> cfg = SearchConfig(model="vgg_tiny", dataset_options={"num_samples": 200, "image_size": 16},
        ...                    removal_iterations=1, shrink_iterations=1, rollouts=2, reward_mode="kd",
        ...                    reward_steps=2, final_epochs=1, reward_accuracy="ratio", max_flops_ratio=None)
        >>> teacher = build_model("vgg_tiny", in_channels=1)  # else cfg's teacher is trained (and cached)
        >>> res = run_random_search(cfg, Path(tempfile.mkdtemp()) / "rand", quiet=True, teacher=teacher)
        >>> [(r["stage"], r["iteration"]) for r in res.history]  # 2 rollouts per iteration
        [('removal', 0), ('removal', 0), ('shrink', 0), ('shrink', 0)]
    """
    if resume:
        meta = RunDir.open(run_dir).read_json(BASELINE_FILE)
        if meta.get("method") != "random_search":
            raise ConfigError(f"{run_dir} is not a random-search run; resume it with its command")
        p_remove = float(meta["p_remove"])
    elif p_remove is None:
        p_remove = cfg.remove_prior  # what a fresh removal policy draws
    return run_compress(
        cfg,
        run_dir,
        resume=resume,
        quiet=quiet,
        search_cls=functools.partial(RandomSearch, p_remove=p_remove),
        teacher=teacher,
        extra_files={BASELINE_FILE: {"method": "random_search", "p_remove": p_remove}},
        changes=changes,
    )
