"""Graph surgery: removal, shrinkage, repair, weight inheritance, degenerate students, diffs."""

import copy

import pytest
import torch
from _zoo import input_size_for
from torch import nn

from n2n_fx import analyze, apply_actions, model_cost, remove_layers, shrink, trace
from n2n_fx.errors import ConfigError
from n2n_fx.rewrite import Reason, compare, to_dot


def _x(name, n=2):
    torch.manual_seed(1)
    return torch.randn(n, *input_size_for(name))


def _train_step_ok(student, x, classes=10):
    student.train()
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    y = torch.randint(0, classes, (x.shape[0],))
    loss = nn.functional.cross_entropy(student(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "mobilenet_v3_small",
        "densenet121",
        "convnext_tiny",
        "vgg11_bn",
        "efficientnet_b0",
        "shufflenet_v2_x0_5",
    ],
)
def test_noop_rewrite_is_exact(traced, name):
    gm = traced(name)
    r = apply_actions(gm)
    assert r.valid and r.diff.is_empty
    r.student.eval()
    x = _x(name)
    with torch.no_grad():
        assert torch.equal(r.student(x), gm(x))
    assert r.student_cost == r.teacher_cost
    # ratio 1.0 everywhere is a no-op too
    a = analyze(gm)
    ones = {lay.node: {v: 1.0 for v in lay.shrinkable} for lay in a.layers if lay.shrinkable}
    r1 = apply_actions(a, shrink=ones)
    r1.student.eval()
    with torch.no_grad():
        assert torch.equal(r1.student(x), gm(x))


def test_teacher_is_never_mutated(traced):
    gm = traced("resnet18")
    before = copy.deepcopy(gm.state_dict())
    code = gm.code
    r = apply_actions(gm, remove=["layer1.0.relu", "layer2.0.conv1"], shrink={"layer3.0.conv1": 0.5})
    _train_step_ok(r.student, _x("resnet18"))
    assert gm.code == code
    for k, v in gm.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.data_ptr() != q.data_ptr() for p in gm.parameters() for q in r.student.parameters())


def test_remove_relu_inside_residual_block(traced):
    gm = traced("resnet18")
    r = remove_layers(gm, ["layer1.0.relu"])
    assert r.valid and r.diff.removed == ("layer1_0_relu",)
    # parameter-free removal: same parameters, still exact weights elsewhere
    assert r.student_cost.params == r.teacher_cost.params
    assert "layer1_0_relu" not in {n.name for n in r.student.graph.nodes}
    assert "layer1_0_relu_1" in {n.name for n in r.student.graph.nodes}  # the shared module's other use stays
    _train_step_ok(r.student, _x("resnet18"))


def test_remove_strided_conv_moves_stride(traced):
    gm = traced("resnet18")
    r = remove_layers(gm, ["layer2.0.conv1"])
    assert r.valid
    assert r.student.get_submodule("layer2.0.conv2").stride == (2, 2)
    assert any("stride moved" in w for w in r.diff.repaired["layer2_0_conv2"])
    # conv2 now reads the 64-channel block input
    assert r.student.get_submodule("layer2.0.conv2").in_channels == 64
    removed = sum(p.numel() for p in gm.get_submodule("layer2.0.conv1").parameters())
    bn1 = 2 * 128 - 2 * 64  # bn1 shrinks from 128 to 64 channels
    conv2 = 128 * 128 * 9 - 128 * 64 * 9
    assert r.student_cost.params == r.teacher_cost.params - removed - bn1 - conv2
    out = r.student(_x("resnet18"))
    assert out.shape == (2, 10)


def test_remove_whole_bottleneck_branch(traced):
    gm = traced("resnet50")
    main = ["conv1", "bn1", "relu", "conv2", "bn2", "relu_1", "conv3", "bn3"]
    # layer1.1 has an identity shortcut: emptying its main branch makes the block identity
    names = [f"layer1.1.{m}" if "relu" not in m else f"layer1_1_{m}" for m in main]
    r = remove_layers(gm, names)
    assert r.valid, r.degenerate
    assert "add_1" in r.diff.collapsed
    # layer1.0 has a projection shortcut: its emptied branch leaves the input, padded to 256 channels
    names0 = [f"layer1.0.{m}" if "relu" not in m else f"layer1_0_{m}" for m in main]
    r0 = remove_layers(gm, names0)
    assert r0.valid, r0.degenerate
    assert any("pad" in why for why in r0.diff.inserted.values())
    _train_step_ok(r0.student, _x("resnet50"))


def test_shrink_conv_feeding_residual_add_is_consistent(traced):
    gm = traced("resnet18")
    r = shrink(gm, {"layer1.0.conv2": 0.5})  # coupled with the stem and every layer1 block output
    assert r.valid
    s = r.student
    for path in ["conv1", "layer1.0.conv2", "layer1.1.conv2"]:
        assert s.get_submodule(path).out_channels == 32
    for path in ["layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0"]:
        assert s.get_submodule(path).in_channels == 32
    assert s.get_submodule("bn1").num_features == 32
    assert r.diff.shrunk == {"conv1": {"out": (64, 32)}}
    assert s(_x("resnet18")).shape == (2, 10)


def test_shrink_inherits_l1_top_filters():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 5),
    )
    with torch.no_grad():
        for i in range(8):
            m[0].weight[i].fill_(0.01 * (i + 1) * (-1) ** i)  # L1 grows with the index
    gm = trace(m, input_size=(3, 8, 8))
    r = shrink(gm, {"0": 0.5})
    s = r.student
    keep = torch.tensor([4, 5, 6, 7])
    assert torch.equal(s.get_submodule("0").weight, m[0].weight[keep])
    assert torch.equal(s.get_submodule("2").weight, m[2].weight[:, keep])
    assert torch.equal(s.get_submodule("4").weight, m[4].weight)


def test_kernel_shrink_keeps_centre_and_output_size(traced):
    gm = traced("resnet18")
    r = shrink(gm, {"layer1.0.conv1": {"kernel": 0.4}})
    conv = r.student.get_submodule("layer1.0.conv1")
    assert conv.kernel_size == (1, 1) and conv.padding == (0, 0)
    assert torch.equal(conv.weight, gm.get_submodule("layer1.0.conv1").weight[:, :, 1:2, 1:2])
    assert r.student(_x("resnet18")).shape == (2, 10)


def test_params_add_up(traced):
    gm = traced("resnet18")
    r = remove_layers(gm, ["layer1.0.bn1"])
    assert r.student_cost.params == r.teacher_cost.params - 128
    assert r.student_cost.params == sum(p.numel() for p in r.student.parameters())
    assert model_cost(r.student) == r.student_cost


def test_training_reduces_loss(traced):
    gm = traced("resnet18")
    r = apply_actions(gm, remove=["layer1.0.relu", "layer3.0.conv1"], shrink={"layer2.0.conv1": 0.5})
    s = r.student.train()
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
    opt = torch.optim.Adam(s.parameters(), 1e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(s(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7


def test_degenerate_empty_never_raises(traced):
    a = analyze(traced("resnet18"))
    r = apply_actions(a, remove=[lay.node for lay in a.layers if lay.removable])
    assert not r.valid and r.degenerate.reason is Reason.EMPTY and r.student is None


def test_degenerate_oversized_linear():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 4, 3, padding=1)
            self.pool = nn.MaxPool2d(4)
            self.fc = nn.Linear(4 * 7 * 7, 10)

        def forward(self, x):
            return self.fc(self.pool(self.c(x)).view(x.shape[0], -1))

    gm = trace(Flat(), input_size=(1, 28, 28))
    r = remove_layers(gm, ["pool"])
    assert r.degenerate.reason is Reason.OVERSIZED_LINEAR
    r2 = remove_layers(gm, ["pool"], max_linear_growth=32)
    # allowed to grow, the Linear now makes the student larger than its teacher
    assert r2.degenerate.reason is Reason.LARGER_THAN_TEACHER
    assert any("196->3136" in w for w in r2.diff.repaired["fc"])


def test_degenerate_unrepairable_is_reported():
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 6, 1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(6 * 4, 2)

        def forward(self, x):
            return self.fc(self.pool(self.c(x)).reshape(-1, 6 * 4))  # hard-coded feature count

    r = remove_layers(trace(Fixed(), input_size=(3, 4, 4)), ["pool"])
    assert not r.valid and r.degenerate.reason in (Reason.UNREPAIRABLE, Reason.OUTPUT_MISMATCH)
    assert "\n" not in r.degenerate.detail


def test_a_surgery_bug_fails_loudly(traced, monkeypatch):
    """Only repair failures make degenerate students: a bug in a handler propagates."""
    from n2n_fx.layers import spec_for

    def buggy(module, ctx):
        return {}["no such key"]

    monkeypatch.setattr(type(spec_for(nn.Conv2d(1, 1, 1))), "rebuild", lambda self, m, ctx: buggy(m, ctx))
    with pytest.raises(KeyError, match="no such key"):
        shrink(traced("resnet18"), {"layer1.0.conv1": 0.5})


class _Twice(nn.Module):
    """One conv called twice: its weights are shared between the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.b(torch.relu(self.b(self.a(x)))))


def test_shared_modules_stay_shared_or_the_rewrite_is_refused():
    gm = trace(_Twice(), input_size=(3, 8, 8))
    r = remove_layers(gm, ["relu"])
    assert r.valid
    calls = [n.target for n in r.student.graph.nodes if n.op == "call_module" and n.target.startswith("b")]
    assert calls == ["b", "b"]  # one module, still called twice
    # shrinking the first call's input would need a second, narrower copy of the shared conv
    r = shrink(gm, {"a": 0.5})
    assert not r.valid and r.degenerate.reason is Reason.UNREPAIRABLE
    assert "shared by several calls" in r.degenerate.detail


def test_illegal_actions_are_one_line_errors(traced):
    gm = traced("resnet18")
    with pytest.raises(ConfigError, match="cannot be removed"):
        remove_layers(gm, ["fc"])
    with pytest.raises(ConfigError, match="no layer named"):
        remove_layers(gm, ["layer9"])
    with pytest.raises(ConfigError, match="must be in"):
        shrink(gm, {"layer1.0.conv1": 1.5})
    with pytest.raises(ConfigError, match="no output channels"):
        shrink(gm, {"layer1.0.bn1": 0.5})
    # strict=False ignores what a layer does not allow (used by policies)
    r = apply_actions(gm, remove=["fc"], shrink={"layer1.0.bn1": 0.5}, strict=False)
    assert r.valid and r.diff.is_empty


def test_diff_renderings(traced):
    gm = traced("resnet18")
    r = apply_actions(gm, remove=["layer2.0.conv1"], shrink={"layer3.0.conv1": 0.5})
    text = r.diff.table()
    assert "layer2_0_conv1" in text and "removed" in text and "256->128" in text
    dot = to_dot(r.student, r.diff, gm)
    assert dot.startswith("digraph") and "removed" in dot and "orange" in dot
    rows = {row[0]: row for row in compare(gm, r.student)}
    assert rows["layer2_0_conv1"][1] == "removed" and rows["layer3_0_conv1"][1] == "changed"
    assert type(r.diff).from_json(r.diff.to_json()) == r.diff


def _layout(m: nn.Module) -> dict:
    """Everything of a module but its tensor values: attributes, tensor names and shapes."""
    out = {k: v for k, v in vars(m).items() if k not in ("_parameters", "_buffers", "training")}
    out["_parameters"] = {k: None if v is None else tuple(v.shape) for k, v in m._parameters.items()}
    out["_buffers"] = {k: None if v is None else tuple(v.shape) for k, v in m._buffers.items()}
    return out


@pytest.mark.parametrize(
    "old, ctx_kwargs, fresh",
    [
        # rebuilt conv (fewer in/out channels, kernel 5 -> 3 with padding kept "same", stride moved in)
        (
            nn.Conv2d(8, 16, 5, stride=1, padding=2, bias=True, padding_mode="reflect"),
            dict(out=[0, 3, 5, 7], in_keep=[1, 2], kernel=((3, 3), (1, 1)), stride=2),
            nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=True, padding_mode="reflect"),
        ),
        (nn.Conv1d(6, 6, 3, bias=False), dict(out=[0, 1], in_keep=[2, 3, 4]), nn.Conv1d(3, 2, 3, bias=False)),
        (nn.Linear(10, 7), dict(out=[1, 2, 3], in_keep=[0, 9]), nn.Linear(2, 3)),
        (nn.BatchNorm2d(12), dict(in_keep=[0, 4, 8]), nn.BatchNorm2d(3)),
        (nn.BatchNorm1d(5, affine=False), dict(in_keep=[1, 3]), nn.BatchNorm1d(2, affine=False)),
    ],
)
def test_rebuilt_modules_match_freshly_constructed_ones(old, ctx_kwargs, fresh):
    """Handlers build modules without __init__; the result must be what the constructor makes."""
    from n2n_fx.layers import RebuildContext, spec_for

    keep = torch.tensor(ctx_kwargs["in_keep"])
    out = torch.tensor(ctx_kwargs["out"]) if "out" in ctx_kwargs else None
    ctx = RebuildContext(
        in_idx=keep,
        in_size=keep.numel(),
        out_idx=out,
        coupled=False,
        kernel=ctx_kwargs.get("kernel"),
        stride=ctx_kwargs.get("stride"),
        notes=[],
    )
    new = spec_for(old).rebuild(old, ctx).module
    assert _layout(new) == _layout(fresh)
    for name, t in list(new.named_parameters()) + list(new.named_buffers()):
        assert t.device.type == "cpu" and all(t is not u for u in list(old.parameters()) + list(old.buffers())), name
    spatial = {nn.Conv2d: (9, 9), nn.BatchNorm2d: (9, 9), nn.Conv1d: (9,)}.get(type(old), ())
    x = torch.randn(4, keep.numel(), *spatial)
    assert new(x).shape == fresh(x).shape
    if any(True for _ in new.parameters()):
        new(x).square().mean().backward()  # a trainable module: every parameter gets a gradient
        assert all(p.grad is not None for p in new.parameters())


def test_removal_start_is_where_random_removals_stay_legal():
    """``legal_remove_prior``: removing a pool of a pooled stack multiplies the FLOPs of every conv
    after it, so at the paper's P(remove) 0.5 most random students break a cap at the teacher's
    FLOPs; the start goes down the rates until 40 % of the students are legal, the same for the same
    seed, and stays at 0.5 without a cap or where removals stay cheap (conv4)."""
    import random

    from n2n_fx.rewrite.sample import REMOVE_PRIORS, legal_remove_prior

    layers: list[nn.Module] = []
    for c_in, c_out in ((1, 4), (4, 8), (8, 16), (16, 32), (32, 32)):  # widening: early pools save the most
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)]  # every removal stays valid: FLOPs decide
    pooled = analyze(trace(nn.Sequential(*layers, *head), input_size=(1, 32, 32)))
    cap = model_cost(pooled.gm).flops
    prior, measured = legal_remove_prior(pooled, random.Random(0), cap)
    assert measured[0.5] < 0.4 <= measured[prior] and prior < 0.5
    assert list(measured) == [r for r in REMOVE_PRIORS if r >= prior]  # tried from 0.5 down, stopped there
    assert legal_remove_prior(pooled, random.Random(0), cap) == (prior, measured)
    assert legal_remove_prior(pooled, random.Random(0), None)[0] == 0.5
    conv4 = analyze(trace("conv4", input_size=(1, 28, 28)))
    assert legal_remove_prior(conv4, random.Random(0), model_cost(conv4.gm).flops)[0] == 0.5
