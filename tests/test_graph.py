"""Layers, blocks, channel spaces and features."""

import operator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from n2n_fx import analyze, trace
from n2n_fx.features import (
    FEATURE_DIM,
    RATIOS,
    policy_input,
    raw_features,
    shrink_input,
    shrink_steps,
)
from n2n_fx.graph.blocks import find_blocks, to_networkx
from n2n_fx.graph.kinds import Kind


def test_resnet18_golden_features(traced):
    a = analyze(traced("resnet18"))
    raw = raw_features(a.layers)
    assert raw.shape == (60, 7)
    # stem: conv 7x7/2 p3 -> 64, bn, relu, maxpool 3/2 p1; outside any block
    np.testing.assert_array_equal(
        raw[:4],
        [
            [Kind.CONV.code, 7, 2, 3, 64, 0, 0],
            [Kind.BATCHNORM.code, 0, 1, 0, 64, 0, 0],
            [Kind.RELU.code, 0, 1, 0, 64, 0, 0],
            [Kind.MAXPOOL.code, 3, 2, 1, 64, 0, 0],
        ],
    )
    # layer1.0: conv1 bn1 relu conv2 bn2 inside the block (s_start counts up, s_end down), relu after the add outside
    np.testing.assert_array_equal(raw[4:10, 5:], [[1, 5], [2, 4], [3, 3], [4, 2], [5, 1], [0, 0]])
    # layer2.0: main branch of 5 layers, shortcut conv + bn (1,2), (2,1)
    names = [lay.node for lay in a.layers]
    i = names.index("layer2_0_downsample_0")
    np.testing.assert_array_equal(
        raw[i : i + 2],
        [[Kind.CONV.code, 1, 2, 0, 128, 1, 2], [Kind.BATCHNORM.code, 0, 1, 0, 128, 2, 1]],
    )
    assert raw[names.index("layer2_0_conv1")].tolist() == [Kind.CONV.code, 3, 2, 1, 128, 1, 5]
    # classifier fixed, global pool fixed, everything else removable
    assert [lay.node for lay in a.layers if not lay.removable] == ["avgpool", "fc"]
    assert len(a.blocks) == 8


def test_coupled_shrink_variables_resnet18(traced):
    a = analyze(traced("resnet18"))
    by = a.by_node
    # conv2 of each block feeds the residual add: coupled with the stem conv (owner), so no own "out"
    assert "out" in by["conv1"].shrinkable
    assert "out" not in by["layer1_0_conv2"].shrinkable and by["layer1_0_conv2"].out_owner == "conv1"
    assert "out" in by["layer1_0_conv1"].shrinkable
    assert by["fc"].shrinkable == ()


def test_nested_blocks_mobilenet_v3(traced):
    gm = traced("mobilenet_v3_small")
    blocks = find_blocks(gm)
    joins = {b.join for b in blocks}
    # squeeze-excitation multiply inside an inverted residual add
    se = [b for b in blocks if "mul" in b.join]
    res = [b for b in blocks if "add" in b.join]
    assert se and res
    nested = [(s, r) for s in se for r in res if s.members < r.members]
    assert nested, joins
    s, r = nested[0]
    a = analyze(gm)
    # a layer inside the SE takes its (innermost) block's positions
    inner = a.by_node[s.layers[0]]
    assert inner.s_start == 1 and inner.s_end == len(s.layers)


def test_networkx_view(traced):
    g = to_networkx(traced("resnet18"))
    assert g.number_of_nodes() == len(traced("resnet18").graph.nodes)
    assert g.nodes["fc"]["shape"] == (2, 10)


def test_functional_and_module_layers_alike():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            x = F.relu(self.c(x))
            x = F.max_pool2d(x, 2)
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
            return self.fc(x.relu())

    a = analyze(trace(M(), input_size=(3, 16, 16)))
    assert [lay.kind for lay in a.layers] == [
        Kind.CONV,
        Kind.RELU,
        Kind.MAXPOOL,
        Kind.ADAPTIVEPOOL,
        Kind.RELU,
        Kind.LINEAR,
    ]
    assert a.layers[2].kernel == 2 and a.layers[2].stride == 2


class _Gain(nn.Module):
    """A layer type n2n_fx has never heard of."""

    def __init__(self, c):
        super().__init__()
        self.g = nn.Parameter(torch.ones(c, 1, 1))

    def forward(self, x):
        return x * self.g


def test_unknown_layer_type_is_other_not_a_crash():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Conv2d(3, 8, 1)
            self.gain = _Gain(8)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.gain(self.emb(x)).mean((2, 3)))

    a = analyze(trace(M(), input_size=(3, 4, 4), leaf_modules=[_Gain]))
    kinds = [lay.kind for lay in a.layers]
    assert Kind.OTHER in kinds
    assert a.by_node["gain"].removable  # shape-preserving, so removal is legal
    x = policy_input(a.layers)
    assert x.shape == (len(a.layers), FEATURE_DIM)


def test_policy_input_is_teacher_independent(traced):
    x18 = policy_input(analyze(traced("resnet18")).layers)
    xmb = policy_input(analyze(traced("mobilenet_v3_small")).layers)
    assert x18.shape[1] == xmb.shape[1] == FEATURE_DIM
    for x in (x18, xmb):
        assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1.5
        assert torch.allclose(x[:, : len(Kind)].sum(1), torch.ones(len(x)))


def test_shrink_steps_and_masks(traced):
    a = analyze(traced("resnet18"))
    steps = shrink_steps(a.layers)
    assert len(steps) == sum(len(lay.shrinkable) for lay in a.layers)
    x, var, legal = shrink_input(a.layers, steps)
    assert x.shape == (len(steps), FEATURE_DIM) and var.shape == (len(steps),)
    assert legal.shape == (len(steps), len(RATIOS)) and legal[:, -1].all()


@pytest.mark.parametrize("model", ["resnet18", "mobilenet_v3_small"])
def test_each_legal_ratio_makes_a_different_student(traced, model):
    """Ratios that give the same layer are one action: a 3x3 kernel is kept (1.0) or made 1x1 (0.3),
    never "0.8", which the surgery also turns into 1x1. Every size the grid reaches stays reachable."""
    from n2n_fx.rewrite import apply_actions

    a = analyze(traced(model))
    steps = shrink_steps(a.layers)
    kernels = [s for s in steps if s.variable == "kernel" and a.by_node[s.node].kernel == 3]
    assert kernels and all([r for r, ok in zip(RATIOS, s.legal, strict=True) if ok] == [0.3, 1.0] for s in kernels)
    for step in [kernels[0], next(s for s in steps if s.variable == "out")]:
        sizes = {}
        for r in RATIOS:  # what the surgery makes of every ratio on the grid
            rw = apply_actions(a, shrink={step.node: {step.variable: r}}, strict=False)
            mod = rw.student.get_submodule(a.by_node[step.node].target)
            sizes[r] = mod.kernel_size if step.variable == "kernel" else getattr(mod, "out_channels", None)
        legal = [r for r, ok in zip(RATIOS, step.legal, strict=True) if ok]
        assert len({sizes[r] for r in legal}) == len(legal)  # no two legal ratios give the same layer
        assert {sizes[r] for r in legal} == set(sizes.values())  # and none is lost


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.Conv2d(3, 8, 3, stride=2, padding=1), (2, 3, 17, 16)),
        (nn.Conv2d(3, 8, (3, 5), stride=(1, 2), padding=(0, 2), dilation=(2, 1)), (2, 3, 20, 21)),
        (nn.Conv2d(4, 4, 3, padding="same", groups=4, padding_mode="reflect"), (1, 4, 9, 9)),
        (nn.Conv2d(4, 6, 5, padding="valid"), (1, 4, 9, 7)),
        (nn.Conv1d(2, 3, 4, stride=3), (5, 2, 30)),
        (nn.Conv3d(1, 2, 3, padding=1), (1, 1, 5, 6, 7)),
        (nn.Conv2d(3, 8, 3), (3, 10, 10)),  # unbatched input
        (nn.Linear(7, 5), (4, 3, 7)),
    ],
)
def test_meta_shape_rules_match_real_forward(module, shape):
    """Surgery answers conv/linear shapes by formula; they must equal what the module computes."""
    from n2n_fx.graph.shapes import call_module_meta

    got = call_module_meta(module, (torch.empty(shape, device="meta"),), {})
    assert got.device.type == "meta" and got.shape == module(torch.randn(shape)).shape


def test_meta_shape_rules_reject_what_forward_rejects():
    from n2n_fx.graph.shapes import call_function_meta, call_module_meta

    with pytest.raises(RuntimeError, match="input channels"):
        call_module_meta(nn.Conv2d(3, 8, 3), (torch.empty(1, 4, 8, 8, device="meta"),), {})
    with pytest.raises(RuntimeError, match="smaller than its kernel"):
        call_module_meta(nn.Conv2d(3, 8, 5), (torch.empty(1, 3, 2, 2, device="meta"),), {})
    with pytest.raises(RuntimeError, match="input features"):
        call_module_meta(nn.Linear(7, 5), (torch.empty(2, 6, device="meta"),), {})
    a, b = torch.empty(2, 8, 4, 4, device="meta"), torch.empty(2, 8, 1, 1, device="meta")
    assert call_function_meta(operator.add, (a, b), {}).shape == (2, 8, 4, 4)
    with pytest.raises(RuntimeError):
        call_function_meta(operator.mul, (a, torch.empty(2, 7, 4, 4, device="meta")), {})


def test_module_at_finds_modules_and_names_what_is_missing():
    from n2n_fx.graph.kinds import module_at

    m = nn.Sequential(nn.Sequential(nn.ReLU(), nn.Conv2d(1, 1, 1)))
    assert module_at(m, "0.1") is m[0][1]
    with pytest.raises(AttributeError, match="has no attribute"):
        module_at(m, "0.7")
