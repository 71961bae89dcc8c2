"""The smallest complete searches the tests run: vgg_tiny on a few hundred synthetic 16x16 images."""

from __future__ import annotations

from typing import Any

# data and teacher of a tiny run (a SearchConfig's first fields)
TINY_DATA: dict[str, Any] = dict(
    model="vgg_tiny",
    dataset="synthetic",
    dataset_options={"num_samples": 360, "image_size": 16},
    teacher_epochs=2,
    batch_size=32,
)
# a complete two-stage search in a few seconds
TINY_BUDGET: dict[str, Any] = dict(
    removal_iterations=2, shrink_iterations=2, rollouts=2, reward_steps=3, final_epochs=1
)


def tiny(**changes: Any) -> dict[str, Any]:
    """TINY_DATA + TINY_BUDGET with ``changes`` (a ``dataset_options`` change replaces the whole dict)."""
    return {**TINY_DATA, **TINY_BUDGET, **changes}
