"""The smallest complete searches the tests run: vgg_tiny on a few hundred synthetic 16x16 images."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

# data and teacher of a tiny run (a SearchConfig's first fields)
TINY_DATA: dict[str, Any] = dict(
    model="vgg_tiny",
    dataset="synthetic",
    dataset_options={"num_samples": 360, "image_size": 16},
    teacher_epochs=2,
    batch_size=32,
)
# a complete two-stage search in a few seconds (kd rewards: the paper's protocol; tests of the
# default shared rewards say so, and get supernets of a few steps)
TINY_BUDGET: dict[str, Any] = dict(
    removal_iterations=2,
    removal_lr=0.003,  # the paper's: the tiny teacher is near chance, a faster policy removes everything
    reward_accuracy="ratio",  # the paper's A / A_teacher: above-chance rewards refuse a teacher at chance
    shrink_iterations=2,
    rollouts=2,
    reward_mode="kd",
    reward_steps=3,
    supernet_steps=6,
    supernet_shrink_steps=4,
    max_flops_ratio=None,  # 16x16 inputs: most removals raise FLOPs; tests of the FLOPs cap set it
    final_epochs=1,
)


def tiny(**changes: Any) -> dict[str, Any]:
    """TINY_DATA + TINY_BUDGET with ``changes`` (a ``dataset_options`` change replaces the whole dict)."""
    return {**TINY_DATA, **TINY_BUDGET, **changes}


def removed(teacher: Any, *positions: int) -> Any:
    """The student of ``teacher`` (a GraphModule) without the layers at ``positions`` (it must be valid)."""
    from n2n_fx import apply_actions, find_layers

    layers = [lay.node for lay in find_layers(teacher)]
    r = apply_actions(teacher, remove=[layers[i] for i in positions], strict=False)
    assert r.valid, r.degenerate
    return r.student


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 240) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fail the test if it ends first or ``what`` never happens."""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if ready():
                return
            if proc.poll() is not None:
                err = proc.stderr.read().decode()[-500:] if proc.stderr else ""
                pytest.fail(f"run ended before it could be killed: {err}")
            time.sleep(0.05)
        pytest.fail(f"the run did not reach {what} in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
