"""Weightless layers: activations, gates, pools, dropout (their kind, and shape rules where trivial)."""

from __future__ import annotations

from torch import nn

from .kind import Kind
from .spec import LayerSpec, register_layer

__all__: list[str] = []


@register_layer(nn.ReLU, nn.ReLU6, nn.LeakyReLU)
class ReLUSpec(LayerSpec):
    kind = Kind.RELU
    same_shape = True


@register_layer(nn.GELU, nn.SiLU, nn.Hardswish, nn.ELU, nn.SELU, nn.CELU, nn.Tanh, nn.Mish, nn.Softplus, nn.Hardtanh)
class ActivationSpec(LayerSpec):
    kind = Kind.ACTIVATION
    same_shape = True


@register_layer(nn.Sigmoid, nn.Hardsigmoid)
class GateSpec(LayerSpec):
    kind = Kind.GATE
    same_shape = True


@register_layer(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
class DropoutSpec(LayerSpec):
    kind = Kind.DROPOUT
    same_shape = True


@register_layer(nn.Identity)
class IdentitySpec(LayerSpec):
    same_shape = True


@register_layer(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
class MaxPoolSpec(LayerSpec):
    kind = Kind.MAXPOOL


@register_layer(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
class AvgPoolSpec(LayerSpec):
    kind = Kind.AVGPOOL


@register_layer(
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
class AdaptivePoolSpec(LayerSpec):
    kind = Kind.ADAPTIVEPOOL
