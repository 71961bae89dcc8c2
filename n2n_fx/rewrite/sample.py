"""Random legal actions: for fuzzing the surgery and for the random-search baseline."""

from __future__ import annotations

import random

from ..features.features import RATIOS, removal_mask, shrink_steps
from ..graph.layers import Analysis

__all__ = ["random_actions"]


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
