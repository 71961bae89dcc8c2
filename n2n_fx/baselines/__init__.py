"""Baselines of the paper (§4.4) and the random-search control of the RL search.

Example::

    from n2n_fx.baselines import run_random_search, prune, Reference, build_handmade
    res = run_random_search(SearchConfig(), "runs/random")          # same budget as N2N
    pruned = prune(teacher_gm, splits, reference=Reference(0.97, params=20_000))
    student = build_handmade("fitnet", 10, 1, target_params=20_000)
"""

from .handmade import (
    ARCHITECTURES,
    HandmadeResult,
    build_handmade,
    count_model_params,
    fitnet,
    train_handmade,
    vgg_small,
    width_for_params,
)
from .pruning import (
    STOP_ACCURACY,
    STOP_PARAMS,
    PruneConfig,
    PruneResult,
    PruneStep,
    Reference,
    prune,
    stop_reason,
)
from .random_search import RANDOM_POLICY, RandomSearch, run_random_search
from .reference import RunReference, load_reference
from .taylor import prunable_spaces, taylor_scores

__all__ = [
    "ARCHITECTURES",
    "RANDOM_POLICY",
    "STOP_ACCURACY",
    "STOP_PARAMS",
    "HandmadeResult",
    "PruneConfig",
    "PruneResult",
    "PruneStep",
    "RandomSearch",
    "Reference",
    "RunReference",
    "build_handmade",
    "count_model_params",
    "fitnet",
    "load_reference",
    "prunable_spaces",
    "prune",
    "run_random_search",
    "stop_reason",
    "taylor_scores",
    "train_handmade",
    "vgg_small",
    "width_for_params",
]
