"""Random legal actions: for fuzzing the surgery and for the random-search baseline."""

from __future__ import annotations

import random

from ..features.features import RATIOS, removal_mask, shrink_steps
from ..graph.layers import Analysis
from .rewrite import apply_actions

__all__ = ["REMOVE_PRIORS", "legal_remove_prior", "random_actions"]

# the removal rates a fresh removal policy may start at, the paper's uniform 0.5 first
REMOVE_PRIORS = (0.5, 0.4, 0.3, 0.2, 0.1)


def random_actions(
    analysis: Analysis,
    rng: random.Random,
    p_remove: float = 0.3,
    p_shrink: float = 0.5,
    ratios: tuple[float, ...] = RATIOS,
    passive: bool = True,
) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Remove each removable layer with probability ``p_remove``; shrink each variable of the
    remaining layers with probability ``p_shrink`` by a uniformly drawn legal ratio.
    ``passive=False`` never removes passive layers (norms, activations, dropout: ``Kind.passive``).

    Example:
        >>> from n2n_fx import analyze, trace
        >>> analysis = analyze(trace("conv4", input_size=(1, 16, 16)))
        >>> remove, shrink = random_actions(analysis, random.Random(0))
        >>> remove
        ['features_3', 'features_12', 'classifier_2']
        >>> shrink
        {'features_7': {'kernel': 0.3}, 'classifier_1': {'out': 0.2}}
    """
    decides = removal_mask(analysis.layers, passive=passive).tolist()
    remove = [lay.node for lay, ok in zip(analysis.layers, decides, strict=True) if ok and rng.random() < p_remove]
    gone = set(remove)
    shrink: dict[str, dict[str, float]] = {}
    for step in shrink_steps(analysis.layers, ratios):
        if step.node in gone or rng.random() >= p_shrink:
            continue
        legal = [r for r, ok in zip(ratios, step.legal, strict=True) if ok]
        shrink.setdefault(step.node, {})[step.variable] = rng.choice(legal)
    return remove, shrink


def legal_remove_prior(
    analysis: Analysis,
    rng: random.Random,
    max_flops: float | None,
    *,
    passive: bool = False,
    draws: int = 128,
    share: float = 0.4,
) -> tuple[float, dict[float, float]]:
    """The first rate of ``REMOVE_PRIORS`` at which at least ``share`` of ``draws`` random removals
    give a valid student of at most ``max_flops`` FLOPs (the last rate when none does), and the
    share of legal students measured at each rate tried.

    Removing a pooling layer or a stride multiplies the FLOPs of every layer after it, so on a deep
    net most removals at the paper's uniform start break a FLOPs cap (VGG-13 on 28x28 images: about
    20 % legal at 0.5, 45 % at 0.2): a policy starting there sees almost only refused students.

    Example:
        >>> from n2n_fx import analyze, trace
        >>> analysis = analyze(trace("conv4", input_size=(1, 28, 28)))
        >>> rate, measured = legal_remove_prior(analysis, random.Random(0), max_flops=36_646_400)
        >>> rate, measured[0.5] >= 0.5
        (0.5, True)
    """
    measured: dict[float, float] = {}
    for rate in REMOVE_PRIORS:
        legal = 0
        for _ in range(draws):
            remove, _ = random_actions(analysis, rng, p_remove=rate, p_shrink=0.0, passive=passive)
            rw = apply_actions(analysis, remove)
            legal += rw.valid and (max_flops is None or rw.student_cost.flops <= max_flops)
        measured[rate] = legal / draws
        if measured[rate] >= share:
            return rate, measured
    return REMOVE_PRIORS[-1], measured
