"""Shared fixtures: the model zoo, input sizes, the real-data location."""

from __future__ import annotations

from collections import OrderedDict
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


TRACE_CACHE_SIZE = 4  # the slow zoo suite walks 80 models; keeping all of them took >22 GiB (OOM)


@pytest.fixture(scope="session")
def traced():
    """traced(name) -> GraphModule (eval mode), the last few traced models kept for reuse."""
    cache: OrderedDict[str, torch.fx.GraphModule] = OrderedDict()

    def get(name: str) -> torch.fx.GraphModule:
        if name in cache:
            cache.move_to_end(name)
            return cache[name]
        while len(cache) >= TRACE_CACHE_SIZE:
            cache.popitem(last=False)
        torch.manual_seed(0)
        gm = trace(name, input_size=input_size_for(name))
        gm.eval()
        cache[name] = gm
        return gm

    return get
