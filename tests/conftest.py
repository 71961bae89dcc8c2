"""Shared fixtures: the model zoo, input sizes, the real-data location."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _zoo import input_size_for

from n2n_fx.teacher.trace import trace

# Small models on few cores: one intra-op thread is faster and keeps results bit-stable
# (on 2 shared cores a second spinning thread made tiny LSTMs ~30x slower).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts on one torch thread, whatever an earlier test set."""
    torch.set_num_threads(1)
    yield

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def traced():
    """Trace models once per session: traced(name) -> GraphModule (eval mode)."""
    cache: dict[str, torch.fx.GraphModule] = {}

    def get(name: str) -> torch.fx.GraphModule:
        if name not in cache:
            torch.manual_seed(0)
            gm = trace(name, input_size=input_size_for(name))
            gm.eval()
            cache[name] = gm
        return cache[name]

    return get
