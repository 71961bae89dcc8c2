"""The torchvision zoo: every traceable classifier traces, analyses and survives random surgery.

Known gaps are data (``KNOWN_GAPS``), shown in the test report as xfail with the reason.
"""

from __future__ import annotations

import random

import pytest
import torch
from _zoo import FAST_ZOO, input_size_for
from torch import nn

from n2n_fx import analyze, apply_actions, trace
from n2n_fx.features import FEATURE_DIM, policy_input, raw_features
from n2n_fx.rewrite.sample import random_actions
from n2n_fx.teacher.zoo import classification_models

ZOO = classification_models()

# model -> why its random rewrites are not all valid yet: a strict xfail, so a fixed gap
# fails the suite until it is removed from this table
KNOWN_GAPS: dict[str, str] = {}


def _with_gaps(names: list[str]) -> list:
    return [
        pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_GAPS[n], strict=True)) if n in KNOWN_GAPS else n
        for n in names
    ]


def _check_valid(gm, r, name) -> None:
    """The rewrite gave a student that runs, trains, and whose counts add up."""
    assert r.valid, f"{name}: degenerate student ({r.degenerate})"
    s = r.student
    x = torch.randn(2, *input_size_for(name))
    s.train()
    out = s(x)
    assert out.shape == gm.graph.find_nodes(op="output")[0].meta["n2n_val"].shape
    loss = nn.functional.cross_entropy(out, torch.randint(0, out.shape[1], (2,)))
    loss.backward()
    torch.optim.SGD(s.parameters(), lr=1e-3).step()
    assert r.student_cost.params == sum(p.numel() for p in s.parameters())
    assert r.student_cost.params <= r.teacher_cost.params


def _run(name, traced, seeds):
    gm = traced(name)
    a = analyze(gm)
    assert a.layers and raw_features(a.layers).shape == (len(a.layers), 7)
    assert policy_input(a.layers).shape == (len(a.layers), FEATURE_DIM)
    for seed in seeds:
        remove, shrink = random_actions(a, random.Random(seed), p_remove=0.3, p_shrink=0.5)
        r = apply_actions(a, remove=remove, shrink=shrink)
        _check_valid(gm, r, name)


@pytest.mark.zoo
@pytest.mark.parametrize("name", _with_gaps(FAST_ZOO))
def test_random_rewrites_give_valid_students_fast(name, traced):
    _run(name, traced, seeds=[0])


@pytest.mark.zoo
@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_every_classifier_traces_and_analyses(name):
    """Every torchvision classifier: trace, layer list, blocks, channel spaces and features."""
    gm = trace(name, input_size=input_size_for(name))
    a = analyze(gm)
    assert a.layers and any(lay.removable for lay in a.layers)
    assert not a.layers[-1].removable  # the classifier is fixed
    raw = raw_features(a.layers)
    assert raw.shape == (len(a.layers), 7) and (raw[:, 5:] >= 0).all()
    x = policy_input(a.layers)
    assert x.shape == (len(a.layers), FEATURE_DIM) and torch.isfinite(x).all()
    for b in a.blocks:  # every layer of a block lies strictly between its fork and join
        assert b.fork not in b.layers and b.join not in b.layers


@pytest.mark.zoo
@pytest.mark.slow
@pytest.mark.parametrize("name", _with_gaps(ZOO))
def test_random_rewrites_give_valid_students_zoo(name, traced):
    _run(name, traced, seeds=range(5))
