"""Transformer surgery: attention and MLP branches removed, MLP hidden size shrunk, vit/maxvit valid."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from n2n_fx import analyze, apply_actions, trace
from n2n_fx.layers import Kind
from n2n_fx.rewrite.sample import random_actions

SIZE = (3, 32, 32)


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10
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
