"""Layer specs: every registered spec's shape rule matches a real forward, its FLOPs match
``torch.utils.flop_counter.FlopCounterMode``, and whole-model FLOPs agree within 1 %."""

from __future__ import annotations

import pytest
import torch
from _zoo import FAST_ZOO, input_size_for
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

from n2n_fx import model_cost, trace
from n2n_fx.errors import ConfigError
from n2n_fx.layers import UNKNOWN_WEIGHTED, HeadAttention, Kind, LayerSpec, register_layer, registered_specs, spec_for
from n2n_fx.layers.window_attention import HeadWindowAttention, HeadWindowAttentionV2
from n2n_fx.reward import count_flops

WINDOW_ATTENTION = (ShiftedWindowAttention, ShiftedWindowAttentionV2, HeadWindowAttention, HeadWindowAttentionV2)

# one row per registered module type: (module, example input)   -- a new spec adds a row here
ROWS: dict[type, tuple[nn.Module, tuple[int, ...]]] = {
    nn.Conv1d: (nn.Conv1d(4, 6, 3, stride=2, padding=1), (2, 4, 11)),
    nn.Conv2d: (nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2), (2, 4, 9, 9)),
    nn.Conv3d: (nn.Conv3d(2, 4, (1, 3, 3), padding=(0, 1, 1)), (2, 2, 3, 6, 6)),
    nn.ConvTranspose1d: (nn.ConvTranspose1d(4, 6, 3, stride=2), (2, 4, 7)),
    nn.ConvTranspose2d: (nn.ConvTranspose2d(4, 8, 3, stride=2, padding=1, output_padding=1), (2, 4, 8, 8)),
    nn.ConvTranspose3d: (nn.ConvTranspose3d(2, 4, 3, groups=2), (2, 2, 3, 4, 4)),
    nn.Linear: (nn.Linear(12, 5), (2, 7, 12)),
    nn.BatchNorm1d: (nn.BatchNorm1d(6), (2, 6, 5)),
    nn.BatchNorm2d: (nn.BatchNorm2d(6), (2, 6, 5, 5)),
    nn.BatchNorm3d: (nn.BatchNorm3d(3), (2, 3, 2, 4, 4)),
    nn.SyncBatchNorm: (nn.SyncBatchNorm(6), None),  # needs a process group to run: shape rule only
    nn.InstanceNorm1d: (nn.InstanceNorm1d(4, affine=True), (2, 4, 9)),
    nn.InstanceNorm2d: (nn.InstanceNorm2d(4), (2, 4, 5, 5)),
    nn.InstanceNorm3d: (nn.InstanceNorm3d(2), (2, 2, 3, 3, 3)),
    nn.LocalResponseNorm: (nn.LocalResponseNorm(3), (2, 6, 5, 5)),
    nn.LayerNorm: (nn.LayerNorm(12), (2, 7, 12)),
    nn.GroupNorm: (nn.GroupNorm(2, 6), (2, 6, 4, 4)),
    nn.PReLU: (nn.PReLU(6), (2, 6, 4, 4)),
    nn.MultiheadAttention: (nn.MultiheadAttention(16, 4, batch_first=True), (2, 5, 16)),
    HeadAttention: (HeadAttention(16, 3, 4, batch_first=True), (2, 5, 16)),  # 3 heads of 4 in a 16-wide stream
    # Swin's window attention on (B, H, W, C): 6x6 tokens padded to 8x8, shifted windows of 4x4
    **{t: (t(16, [4, 4], [2, 2], 2), (2, 6, 6, 16)) for t in WINDOW_ATTENTION},
    nn.Identity: (nn.Identity(), (2, 3)),
    nn.Dropout1d: (nn.Dropout1d(), (2, 3, 4)),
    nn.MaxPool1d: (nn.MaxPool1d(2), (2, 3, 8)),
    nn.MaxPool2d: (nn.MaxPool2d(3, 2, 1), (2, 3, 8, 8)),
    nn.MaxPool3d: (nn.MaxPool3d(2), (2, 3, 4, 4, 4)),
    nn.AvgPool1d: (nn.AvgPool1d(2), (2, 3, 8)),
    nn.AvgPool2d: (nn.AvgPool2d(2), (2, 3, 8, 8)),
    nn.AvgPool3d: (nn.AvgPool3d(2), (2, 3, 4, 4, 4)),
    nn.AdaptiveAvgPool1d: (nn.AdaptiveAvgPool1d(2), (2, 3, 8)),
    nn.AdaptiveAvgPool2d: (nn.AdaptiveAvgPool2d(1), (2, 3, 8, 8)),
    nn.AdaptiveAvgPool3d: (nn.AdaptiveAvgPool3d(1), (2, 3, 4, 4, 4)),
    nn.AdaptiveMaxPool1d: (nn.AdaptiveMaxPool1d(2), (2, 3, 8)),
    nn.AdaptiveMaxPool2d: (nn.AdaptiveMaxPool2d(2), (2, 3, 8, 8)),
    nn.AdaptiveMaxPool3d: (nn.AdaptiveMaxPool3d(2), (2, 3, 4, 4, 4)),
    **{
        t: (t(), (2, 3, 4, 4))
        for t in (
            nn.ReLU,
            nn.ReLU6,
            nn.LeakyReLU,
            nn.GELU,
            nn.SiLU,
            nn.Hardswish,
            nn.ELU,
            nn.SELU,
            nn.CELU,
            nn.Tanh,
            nn.Mish,
            nn.Softplus,
            nn.Hardtanh,
            nn.Sigmoid,
            nn.Hardsigmoid,
            nn.Dropout,
            nn.Dropout2d,
            nn.Dropout3d,
            nn.AlphaDropout,
        )
    },
}


def _call(m: nn.Module, x: torch.Tensor):
    if isinstance(m, (nn.MultiheadAttention, HeadAttention)):
        return m(x, x, x, need_weights=False)[0]
    return m(x)


def test_every_registered_spec_has_a_row():
    assert set(registered_specs()) == set(ROWS)


@pytest.mark.parametrize("t", list(ROWS), ids=lambda t: t.__name__)
def test_spec_shape_rule_and_flops_match_torch(t):
    m, size = ROWS[t]
    m.eval()
    spec = spec_for(m)
    if size is None:
        x = torch.empty(2, 6, 4, device="meta")
        assert spec.out_shape(m, x) == x.shape
        return
    torch.manual_seed(0)
    x = torch.randn(size)
    with torch.no_grad():
        y = _call(m, x)
    rule = spec.out_shape(m, x.to("meta"))
    assert rule is None or rule == y.shape  # None: no rule, the module runs on meta
    # FlopCounterMode on meta: on CPU, eval-mode attention takes a fused path it does not count
    mm = m.to("meta")
    xm = x.to("meta")
    with FlopCounterMode(display=False) as counter:
        _call(mm, xm)
    args = (xm, xm, xm) if isinstance(m, (nn.MultiheadAttention, HeadAttention)) else (xm,)
    assert spec.flops(mm, args, y.to("meta")) == counter.get_total_flops()


def test_spec_shape_rule_checks_what_forward_checks():
    for m, x in [
        (nn.Conv2d(4, 8, 3), torch.empty(2, 5, 9, 9, device="meta")),
        (nn.ConvTranspose2d(4, 8, 3), torch.empty(2, 5, 9, 9, device="meta")),
        (nn.Linear(12, 5), torch.empty(2, 11, device="meta")),
        (nn.BatchNorm2d(6), torch.empty(2, 5, 3, 3, device="meta")),
        (nn.LayerNorm(12), torch.empty(2, 11, device="meta")),
        (nn.PReLU(6), torch.empty(2, 5, 3, 3, device="meta")),
    ]:
        with pytest.raises(RuntimeError):
            spec_for(m).out_shape(m, x)


def test_registering_a_type_twice_raises_and_unknown_weighted_modules_are_pinned():
    with pytest.raises(ConfigError, match="already has the layer spec"):

        @register_layer(nn.Conv2d)
        class Again(LayerSpec):
            pass

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.w[:, None, None]

    assert spec_for(Scale()) is UNKNOWN_WEIGHTED and UNKNOWN_WEIGHTED.kind is Kind.OTHER


def test_transposed_conv_flops_and_kernel_shrink():
    """A ConvTranspose2d is counted by its own rule and its kernel shrink is applied."""

    class Up(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(3, 8, 3, padding=1)
            self.up = nn.ConvTranspose2d(8, 8, 5, stride=2, padding=2, output_padding=1)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

        def forward(self, x):
            return self.head(self.up(self.c(x)))

    from n2n_fx import analyze, shrink

    gm = trace(Up(), input_size=(3, 8, 8))
    assert count_flops(Up(), (3, 8, 8)) == _reference_flops(Up(), (3, 8, 8)) == model_cost(gm).flops
    a = analyze(gm)
    assert "kernel" in a.layer("up").shrinkable
    r = shrink(a, {"up": {"kernel": 0.6, "out": 0.5}})
    assert r.valid and r.student.up.kernel_size == (3, 3) and r.student.up.padding == (1, 1)
    assert r.student.up.out_channels == 4
    # inherited weights: the centre 3x3 taps of the kept filters (a gather, no arithmetic)
    kept = r.plan.kept[a.spaces.class_of("up").root]
    assert torch.equal(r.student.up.weight, gm.up.weight[:, kept, 1:4, 1:4])
    x = torch.randn(2, 3, 8, 8)
    assert r.student(x).shape == (2, 10)
    assert r.student_cost.flops == _reference_flops(r.student, (3, 8, 8))


def _reference_flops(model: nn.Module, size: tuple[int, ...]) -> int:
    """FlopCounterMode on meta tensors, per sample (batch 2)."""
    m = model.to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        m(torch.empty(2, *size, device="meta"))
    return counter.get_total_flops() // 2


def _assert_close(name: str, ours: int, ref: int) -> None:
    assert abs(ours - ref) <= 0.01 * ref, f"{name}: {ours:,} FLOPs vs FlopCounterMode {ref:,}"


@pytest.mark.parametrize("name", FAST_ZOO)
def test_model_flops_match_flop_counter(name, traced):
    gm = traced(name)
    ref = _reference_flops(trace(name, input_size=input_size_for(name)), input_size_for(name))
    _assert_close(name, model_cost(gm).flops, ref)


def test_vit_flops_count_attention():
    size = input_size_for("vit_b_16")
    gm = trace("vit_b_16", input_size=size)
    ref = _reference_flops(gm, size)
    _assert_close("vit_b_16", model_cost(gm).flops, ref)
    assert ref > 35e9  # projections, attention and MLP: 35.1 GFLOPs (ViT-B/16 at 224)


def test_adding_a_layer_type_is_one_spec(monkeypatch):
    """The walk-through of docs/architecture.md: a user's module type registered once is traced
    as a leaf, listed as a layer of its kind, rebuilt by its spec when its channels shrink."""
    from n2n_fx import analyze, shrink
    from n2n_fx.layers import RebuildContext, Rebuilt, gather
    from n2n_fx.layers import spec as spec_module
    from n2n_fx.layers.tensors import set_param, shell

    class ScaleChannels(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.arange(1.0, c + 1))

        def forward(self, x):
            return x * self.w[:, None, None]

    monkeypatch.setattr(spec_module, "_SPECS", dict(spec_module._SPECS))  # the registry is restored after
    monkeypatch.setattr(spec_module, "_CACHE", {})

    @register_layer(ScaleChannels)
    class ScaleChannelsSpec(LayerSpec):
        kind = Kind.NORM
        weight_axis = 1
        same_shape = True

        def check(self, m, x):
            if x.shape[1] != m.w.numel():
                raise RuntimeError(f"ScaleChannels expects {m.w.numel()} channels, got {x.shape[1]}")

        def rebuild(self, m, ctx: RebuildContext) -> Rebuilt:
            new = shell(m)
            set_param(new, "w", gather(m.w.detach(), ctx.in_idx, 0, fill=1.0))
            return Rebuilt(new, None)

    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), ScaleChannels(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )
    gm = trace(model, input_size=(3, 8, 8))
    assert [n.op for n in gm.graph.nodes if n.target == "1"] == ["call_module"]  # a leaf, not a mul
    a = analyze(gm)
    assert a.layer("1").kind is Kind.NORM and not a.layer("1").shrinkable
    r = shrink(a, {"0": 0.5})
    kept = r.plan.kept[a.spaces.class_of(a.layer("0").node).root]
    assert r.valid and torch.equal(r.student.get_submodule("1").w, model[1].w[kept])
    assert r.student(torch.randn(2, 3, 8, 8)).shape == (2, 10)
