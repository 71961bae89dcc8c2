"""Random legal actions: for fuzzing the surgery and for the random-search baseline."""

from __future__ import annotations

import math
import random

from ..features.features import RATIOS, removal_mask, shrink_steps
from ..graph.layers import Analysis
from .rewrite import apply_actions

__all__ = ["KEEP_BIASES", "REMOVE_PRIORS", "draw_ratio", "legal_keep_bias", "legal_remove_prior", "random_actions"]

# the removal rates a fresh removal policy may start at, the paper's uniform 0.5 first
REMOVE_PRIORS = (0.5, 0.4, 0.3, 0.2, 0.1)
# the logit slopes a fresh shrink policy may start at (ratio r drawn with weight exp(bias * r)): mild
# shrinks first (3: mean ratio ~0.75), then uniform, then ever narrower
KEEP_BIASES = (3.0, 1.5, 0.0, -2.0, -4.0, -8.0, -16.0)


def random_actions(
    analysis: Analysis,
    rng: random.Random,
    p_remove: float = 0.3,
    p_shrink: float = 0.5,
    ratios: tuple[float, ...] = RATIOS,
    passive: bool = True,
    bias: float | None = None,
    kernels: bool = True,
) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Remove each removable layer with probability ``p_remove``; shrink each variable of the
    remaining layers with probability ``p_shrink`` by a uniformly drawn legal ratio (``bias``: drawn
    with weight exp(bias * r), as a fresh shrink policy starting at that logit slope draws it).
    ``passive=False`` never removes passive layers (norms, activations, dropout: ``Kind.passive``);
    ``kernels=False`` never shrinks a kernel.

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
    for step in shrink_steps(analysis.layers, ratios, kernels=kernels):
        if step.node in gone or rng.random() >= p_shrink:
            continue
        shrink.setdefault(step.node, {})[step.variable] = draw_ratio(step, rng, ratios, bias)
    return remove, shrink


def draw_ratio(step, rng: random.Random, ratios: tuple[float, ...] = RATIOS, bias: float | None = None) -> float:
    """One legal ratio of a shrink ``step``: uniform, or with weight exp(bias * r)."""
    legal = [r for r, ok in zip(ratios, step.legal, strict=True) if ok]
    if bias is None:
        return rng.choice(legal)
    return rng.choices(legal, [math.exp(bias * r) for r in legal])[0]


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


def legal_keep_bias(
    analysis: Analysis,
    rng: random.Random,
    max_params: float,
    *,
    ratios: tuple[float, ...] = RATIOS,
    draws: int = 32,
    share: float = 0.4,
    kernels: bool = True,
) -> tuple[float, dict[float, float]]:
    """The first slope of ``KEEP_BIASES`` at which at least ``share`` of ``draws`` shrinks of ``analysis``,
    each variable's ratio drawn as a fresh shrink policy draws it (legal ratio r with weight
    exp(bias * r)), give a valid student of at most ``max_params`` parameters (the last slope when
    none does), and the share measured at each slope tried.

    A limit far below the base (VGG-13's stage-1 student asked to shrink 15x further) leaves a policy
    that starts at mild shrinks with nothing but refused students.

    Example:
        >>> from n2n_fx import analyze, trace
        >>> analysis = analyze(trace("conv4", input_size=(1, 16, 16)))
        >>> legal_keep_bias(analysis, random.Random(0), max_params=1e9)[0]
        3.0
        >>> bias, measured = legal_keep_bias(analysis, random.Random(0), max_params=5_000)
        >>> bias < 0 and measured[bias] >= 0.4
        True
    """
    steps = shrink_steps(analysis.layers, ratios, kernels=kernels)  # kernels=False: as the channels-only space draws
    measured: dict[float, float] = {}
    for bias in KEEP_BIASES:
        legal = 0
        for _ in range(draws):
            shrink: dict[str, dict[str, float]] = {}
            for step in steps:
                shrink.setdefault(step.node, {})[step.variable] = draw_ratio(step, rng, ratios, bias)
            rw = apply_actions(analysis, shrink=shrink, strict=False)
            legal += rw.valid and rw.student_cost.params <= max_params
        measured[bias] = legal / draws
        if measured[bias] >= share:
            return bias, measured
    return KEEP_BIASES[-1], measured
