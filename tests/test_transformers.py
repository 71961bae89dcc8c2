"""Transformer surgery: attention and MLP branches removed, MLP hidden size and attention heads shrunk
with inherited weights, vit/maxvit valid."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.vision_transformer import VisionTransformer

from n2n_fx import analyze, apply_actions, trace
from n2n_fx.layers import HeadAttention, Kind
from n2n_fx.rewrite.sample import random_actions

SIZE = (3, 32, 32)


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=16, mlp_dim=32, num_classes=10
    ).eval()


@pytest.fixture(scope="module")
def vit():
    model = _vit()
    return model, trace(model, input_size=SIZE)


def test_attention_is_a_layer_that_removes_its_branch(vit):
    _, gm = vit
    a = analyze(gm)
    attn = [lay for lay in a.layers if lay.kind is Kind.ATTENTION]
    assert len(attn) == 2 and all(lay.removable and lay.branch.startswith("add") for lay in attn)
    assert attn[0].out == 16 and attn[0].flops > 0
    mlp_out = a.layer("encoder.layers.encoder_layer_0.mlp.3")
    assert mlp_out.removable and mlp_out.branch  # writes the fixed-size stream: removed as a branch


def _with_zero_branch(model: nn.Module, path: str) -> nn.Module:
    """The teacher with the output of module ``path`` replaced by zeros (a forward hook)."""
    model.get_submodule(path).register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    return model


@pytest.mark.parametrize(
    "layer, last, gone",
    [
        ("encoder.layers.encoder_layer_0.self_attention", "encoder.layers.encoder_layer_0.dropout", "ln_1"),
        ("encoder.layers.encoder_layer_1.mlp.3", "encoder.layers.encoder_layer_1.mlp.4", "mlp.0"),
    ],
)
def test_removing_a_branch_is_exact(vit, layer, last, gone):
    """The student computes the teacher with that branch's contribution set to zero."""
    _, gm = vit
    r = apply_actions(gm, remove=[layer])
    assert r.valid and r.diff.collapsed
    block = layer.split(".")[2]
    names = {n.target for n in r.student.graph.nodes if n.op == "call_module"}
    assert f"encoder.layers.{block}.{gone}" not in names  # fed only the removed branch: dead code
    x = torch.randn(2, *SIZE)
    reference = _with_zero_branch(_vit(), last)
    with torch.no_grad():
        assert torch.allclose(r.student.eval()(x), reference(x), atol=1e-5)
    assert r.student_cost.params < r.teacher_cost.params
    assert r.student_cost.flops < r.teacher_cost.flops


def test_mlp_hidden_size_shrinks_with_inherited_weights(vit):
    _, gm = vit
    a = analyze(gm)
    r = apply_actions(a, shrink={"encoder.layers.encoder_layer_0.mlp.0": 0.5})
    assert r.valid
    s0, s3, t0, t3 = (
        m.get_submodule(f"encoder.layers.encoder_layer_0.mlp.{i}") for m in (r.student, gm) for i in (0, 3)
    )
    assert s0.out_features == 16 and s3.in_features == 16
    kept = r.plan.kept[a.spaces.class_of("encoder_layers_encoder_layer_0_mlp_0").root]
    assert torch.equal(s0.weight, t0.weight[kept]) and torch.equal(s3.weight, t3.weight[:, kept])
    assert r.student(torch.randn(2, *SIZE)).shape == (2, 10)


ATTN0 = "encoder.layers.encoder_layer_0.self_attention"


def test_attention_heads_shrink_exactly_with_inherited_weights(vit):
    """Fewer heads = the teacher with the dropped heads' output-projection columns set to zero."""
    _, gm = vit
    a = analyze(gm)
    lay = a.layer(ATTN0)
    assert lay.heads == 4 and "heads" in lay.shrinkable
    r = apply_actions(a, shrink={ATTN0: {"heads": 0.5}})
    assert r.valid and r.diff.shrunk[lay.node] == {"heads": (4, 2)}
    kept = r.plan.heads[lay.node]
    s, t = r.student.get_submodule(ATTN0), gm.get_submodule(ATTN0)
    assert isinstance(s, HeadAttention) and s.num_heads == 2 and s.head_dim == 4
    rows = (kept[:, None] * 4 + torch.arange(4)).flatten()  # the kept heads' features
    qkv = torch.cat([rows, rows + 16, rows + 32])
    assert torch.equal(s.in_proj_weight, t.in_proj_weight[qkv]) and torch.equal(s.in_proj_bias, t.in_proj_bias[qkv])
    assert torch.equal(s.out_proj.weight, t.out_proj.weight[:, rows])
    assert torch.equal(s.out_proj.bias, t.out_proj.bias)
    reference = _vit()
    with torch.no_grad():
        dropped = torch.ones(16, dtype=torch.bool)
        dropped[rows] = False
        reference.get_submodule(ATTN0).out_proj.weight[:, dropped] = 0
        x = torch.randn(2, *SIZE)
        assert torch.allclose(r.student.eval()(x), reference(x), atol=1e-5)
    assert r.student_cost.params == r.teacher_cost.params - 2 * 4 * (3 * 16 + 3 + 16)
    flops = FlopCounterMode(display=False)
    with flops, torch.no_grad():
        r.student.to("meta")(torch.empty(2, *SIZE, device="meta"))
    assert r.student_cost.flops == flops.get_total_flops() // 2 < r.teacher_cost.flops


def test_head_attention_with_all_heads_equals_multihead_attention():
    """Every calling convention of nn.MultiheadAttention gives the same result from its student."""
    from n2n_fx.layers.attention import _keep_heads

    torch.manual_seed(0)
    for batch_first in (False, True):
        mha = nn.MultiheadAttention(12, 3, batch_first=batch_first).eval()
        ha = _keep_heads(mha, torch.arange(3)).eval()
        q = torch.randn(2, 5, 12) if batch_first else torch.randn(5, 2, 12)
        kv = torch.randn(2, 7, 12) if batch_first else torch.randn(7, 2, 12)
        pad = torch.zeros(2, 7, dtype=torch.bool)
        pad[1, 5:] = True
        causal = torch.ones(5, 7, dtype=torch.bool).triu(3)
        with torch.no_grad():
            for kw in ({}, {"key_padding_mask": pad}, {"attn_mask": causal}, {"average_attn_weights": False}):
                for need in (True, False):
                    ya, wa = mha(q, kv, kv, need_weights=need, **kw)
                    yb, wb = ha(q, kv, kv, need_weights=need, **kw)
                    assert torch.allclose(ya, yb, atol=1e-5), kw
                    assert (wa is None) == (wb is None) and (wa is None or torch.allclose(wa, wb, atol=1e-6))
            x = torch.randn(5, 12)  # unbatched
            assert torch.allclose(mha(x, x, x)[0], ha(x, x, x)[0], atol=1e-5)


def test_a_student_with_fewer_heads_compresses_again(vit):
    """The head-pruned attention is a registered layer: traced as a leaf, its heads shrink further."""
    _, gm = vit
    first = apply_actions(gm, shrink={ATTN0: {"heads": 0.75}})
    again = trace(first.student, input_size=SIZE)
    lay = analyze(again).layer(ATTN0)
    assert lay.kind is Kind.ATTENTION and lay.heads == 3 and "heads" in lay.shrinkable
    r = apply_actions(again, shrink={ATTN0: {"heads": 0.34}})
    assert r.valid and r.student.get_submodule(ATTN0).num_heads == 1
    assert r.student(torch.randn(2, *SIZE)).shape == (2, 10)


def test_a_sum_of_two_removed_branches_keeps_the_cheaper_one():
    """Both operands of an add are fixed-size branches (maxvit's MBConv shortcut + body): removing
    both leaves the sum nothing, so the plan keeps the one with fewer parameters and says so."""

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.short = nn.Conv2d(8, 4, 1)
            self.body = nn.Conv2d(8, 4, 3, padding=1)

        def forward(self, x):
            y = self.stem(x)
            return (self.short(y) + self.body(y)).flatten(1)  # the model output fixes 4 channels

    gm = trace(Two(), input_size=(3, 6, 6))
    a = analyze(gm)
    assert a.layer("short").branch == a.layer("body").branch == "add"
    r = apply_actions(a, remove=["short", "body"])
    assert r.valid and r.diff.removed == ("body",)
    assert r.diff.repaired["short"][0].startswith("kept: every operand of add was removed")
    assert r.student(torch.randn(2, 3, 6, 6)).shape == (2, 144)


def test_random_rollouts_on_a_small_vit_are_valid(vit):
    _, gm = vit
    a = analyze(gm)
    for seed in range(10):
        remove, shrink = random_actions(a, random.Random(seed), p_remove=0.3, p_shrink=1.0)
        r = apply_actions(a, remove=remove, shrink=shrink)
        assert r.valid, r.degenerate
        out = r.student(torch.randn(2, *SIZE))
        out.sum().backward()
        assert out.shape == (2, 10)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_b_16", "maxvit_t"])
def test_torchvision_transformers_random_rollouts_valid(name):
    gm = trace(name, input_size=(3, 224, 224))
    a = analyze(gm)
    for seed in range(3):
        remove, shrink = random_actions(a, random.Random(seed), p_remove=0.3, p_shrink=1.0)
        r = apply_actions(a, remove=remove, shrink=shrink)
        assert r.valid, r.degenerate


def _swin(v2: bool) -> nn.Module:
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

    torch.manual_seed(0)
    kw = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    return SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], num_classes=10, **kw
    ).eval()


SWIN_SIZE = (3, 48, 48)  # stage 1: 12x12 tokens (shifted windows), stage 2: 6x6 (padded to 8x8)
SWIN_ATTN = "features.3.1.attn"  # 4 heads of 8 features


@pytest.mark.parametrize("v2", [False, True], ids=["swin", "swin_v2"])
def test_swin_window_attention_is_a_layer_whose_heads_shrink_exactly(v2):
    """Swin's attention is one leaf layer: its branch is removable, its heads shrink with their
    qkv rows, proj columns and bias column (v2: cpb_mlp row, logit scale) inherited."""
    from n2n_fx.layers.window_attention import window_attention

    model = _swin(v2)
    gm = trace(model, input_size=SWIN_SIZE)
    x = torch.randn(2, *SWIN_SIZE)
    with torch.no_grad():
        assert torch.allclose(gm(x), model(x), atol=1e-5)
    a = analyze(gm)
    attn = [lay for lay in a.layers if lay.kind is Kind.ATTENTION]
    assert len(attn) == 4 and all(lay.removable and lay.branch and "heads" in lay.shrinkable for lay in attn)
    # the module's own implementation equals torchvision's with every head kept (shifted and padded)
    t = model.get_submodule(SWIN_ATTN)
    y = torch.randn(2, 6, 6, 32)
    with torch.no_grad():
        mine = window_attention(
            y, t.qkv, t.proj, t.get_relative_position_bias(), t.window_size, t.shift_size, 4, 8,
            logit_scale=getattr(t, "logit_scale", None),
        )  # fmt: skip
        assert t.shift_size == [2, 2] and torch.allclose(mine, t(y), atol=1e-5)
    r = apply_actions(a, shrink={SWIN_ATTN: {"heads": 0.5}})
    assert r.valid and r.diff.shrunk[a.layer(SWIN_ATTN).node] == {"heads": (4, 2)}
    kept = r.plan.heads[a.layer(SWIN_ATTN).node]
    s = r.student.get_submodule(SWIN_ATTN)
    rows = (kept[:, None] * 8 + torch.arange(8)).flatten()
    assert s.num_heads == 2 and torch.equal(s.proj.weight, t.proj.weight[:, rows])
    assert torch.equal(s.qkv.weight, t.qkv.weight[torch.cat([rows, rows + 32, rows + 64])])
    if v2:
        assert torch.equal(s.logit_scale, t.logit_scale[kept])
        assert torch.equal(s.cpb_mlp[2].weight, t.cpb_mlp[2].weight[kept])
    else:
        assert torch.equal(s.relative_position_bias_table, t.relative_position_bias_table[:, kept])
    reference = _swin(v2)
    dropped = torch.ones(32, dtype=torch.bool)
    dropped[rows] = False
    with torch.no_grad():
        reference.get_submodule(SWIN_ATTN).proj.weight[:, dropped] = 0
        assert torch.allclose(r.student.eval()(x), reference(x), atol=1e-5)
    for m in (gm, r.student):  # one FLOP counter: the spec's formula vs FlopCounterMode
        flops = FlopCounterMode(display=False)
        with flops, torch.no_grad():
            copy.deepcopy(m).to("meta")(torch.empty(2, *SWIN_SIZE, device="meta"))
        ours = (r.student_cost if m is r.student else r.teacher_cost).flops
        assert abs(ours - flops.get_total_flops() // 2) <= 0.01 * ours


def test_random_rollouts_on_a_small_swin_are_valid():
    a = analyze(trace(_swin(v2=False), input_size=SWIN_SIZE))
    for seed in range(5):
        remove, shrink = random_actions(a, random.Random(seed), p_remove=0.3, p_shrink=1.0)
        r = apply_actions(a, remove=remove, shrink=shrink)
        assert r.valid, r.degenerate
        out = r.student(torch.randn(2, *SWIN_SIZE))
        out.sum().backward()
        assert out.shape == (2, 10)
