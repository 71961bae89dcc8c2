"""Random search: the control for the RL search, with the same action spaces and rollout budget.

It is the N2N main job with both stages sampling from the registered ``uniform`` policy
(``n2n_fx/policy/uniform.py``) instead of the learned LSTMs: stage 1 removes every removable layer
with probability ``p_remove`` (the run's ``remove_prior``, by default the rate a fresh removal
policy starts at), stage 2 draws a uniformly random legal ratio for every shrink variable of the best
stage-1 student, and the ``Learner`` has nothing to update. Everything else is unchanged: the same
surgery, the same ``RewardEvaluator`` (KD on cached teacher logits), the same history rows,
checkpoints, final CE + λ·KD training and report, so the two searches differ only in learning.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..policy import Learner, PolicySettings
from ..search import CompressionResult, RunDir, SearchConfig
from ..search.api import run_compress
from ..search.search import Search
from ..search.stage import Stage

__all__ = ["RANDOM_POLICY", "RandomSearch", "run_random_search", "BASELINE_FILE"]

BASELINE_FILE = "baseline.json"  # marks a run directory as a baseline run (method, settings)
RANDOM_POLICY = "uniform"  # the registered policy both stages of random search sample from


class RandomSearch(Search):
    """``Search`` whose stages sample from the ``uniform`` policy, removals at ``p_remove`` (same budget and rewards).

    ``run_random_search`` runs it as the main job does (example there).
    """

    def __init__(self, *args: Any, p_remove: float | None = None, **kwargs: Any) -> None:
        if p_remove is not None and not 0.0 < p_remove < 1.0:
            raise ConfigError(f"p_remove={p_remove} must be strictly between 0 and 1")
        super().__init__(*args, **kwargs)
        if self.cfg.removal_policy or self.cfg.shrink_policy:
            raise ConfigError("random search learns no policy; drop removal_policy/shrink_policy")
        # runs recorded before random search was a registered policy name the LSTMs: it is uniform all the same
        self.cfg = self.cfg.replace(removal_policy_type=RANDOM_POLICY, shrink_policy_type=RANDOM_POLICY)
        self.p_remove = self.cfg.remove_prior if p_remove is None else p_remove  # a fresh policy's rate

    def _policy_settings(self, stage: Stage) -> PolicySettings:
        settings = super()._policy_settings(stage)  # p_remove None: the rate a fresh removal policy starts at
        return settings if self.p_remove is None else dataclasses.replace(settings, remove_prior=self.p_remove)

    def _learner(self, stage: Stage) -> Learner:
        saved = self.state.learners.get(stage.name)
        if saved is None or saved["policy_spec"].get("policy") == RANDOM_POLICY:
            return super()._learner(stage)
        # a checkpoint of a random search from before: its learner held a frozen LSTM, of which only
        # the generator (the draws to come) and the update count matter
        self.state.learners.pop(stage.name)
        learner = super()._learner(stage)
        learner.generator.set_state(saved["generator"])
        learner.updates = int(saved["updates"])
        self.state.learners[stage.name] = saved
        return learner


def run_random_search(
    cfg: SearchConfig,
    run_dir: str | Path,
    *,
    p_remove: float | None = None,
    resume: bool = False,
    quiet: bool | None = None,
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
        p_remove = None if meta["p_remove"] is None else float(meta["p_remove"])
    else:
        p_remove = cfg.remove_prior if p_remove is None else p_remove  # default: what a fresh removal policy draws
        cfg = cfg.replace(removal_policy_type=RANDOM_POLICY, shrink_policy_type=RANDOM_POLICY)  # recorded so
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
