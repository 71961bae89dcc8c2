"""Layer kinds: which fx nodes are layers a policy acts on, and their type code.

One table maps module types, functions and method names to a ``Kind``; it is the only
place that decides what a "layer" is. Reshapes (flatten, view), joins (add, cat) and
anything unknown are not layers.
"""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import ConfigError

__all__ = ["Kind", "KINDS", "kind_of", "register_module_kind", "register_function_kind"]


class Kind(str, enum.Enum):
    """The layer type vocabulary, fixed across teachers (its order is the type code)."""

    OTHER = "other"
    CONV = "conv"
    CONV_DW = "conv_dw"  # depthwise conv: groups == in_channels
    CONV_GROUPED = "conv_grouped"  # 1 < groups < in_channels
    LINEAR = "linear"
    BATCHNORM = "batchnorm"
    NORM = "norm"  # LayerNorm, GroupNorm, InstanceNorm, LocalResponseNorm
    RELU = "relu"  # ReLU, ReLU6, LeakyReLU, PReLU
    ACTIVATION = "activation"  # smooth activations: GELU, SiLU, Hardswish, ELU, Tanh, Mish, ...
    GATE = "gate"  # sigmoid-like gates: Sigmoid, Hardsigmoid
    MAXPOOL = "maxpool"
    AVGPOOL = "avgpool"
    ADAPTIVEPOOL = "adaptivepool"
    DROPOUT = "dropout"

    @property
    def code(self) -> int:
        return list(Kind).index(self)


KINDS = list(Kind)

_MODULE_KINDS: dict[type, Kind] = {}
_FUNCTION_KINDS: dict[object, Kind] = {}
_METHOD_KINDS: dict[str, Kind] = {}


def register_module_kind(module_type: type, kind: Kind) -> None:
    """Declare that modules of ``module_type`` are layers of ``kind``. Registering twice raises."""
    if module_type in _MODULE_KINDS:
        raise ConfigError(f"{module_type.__name__} already has layer kind {_MODULE_KINDS[module_type].value}")
    _MODULE_KINDS[module_type] = kind


def register_function_kind(fn: object, kind: Kind) -> None:
    """Declare that calls of ``fn`` (a function, or a method name as str) are layers of ``kind``."""
    table = _METHOD_KINDS if isinstance(fn, str) else _FUNCTION_KINDS
    if fn in table:
        raise ConfigError(f"{fn!r} already has layer kind {table[fn].value}")  # type: ignore[index]
    table[fn] = kind  # type: ignore[index]


for _t in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_module_kind(_t, Kind.CONV)
register_module_kind(nn.Linear, Kind.LINEAR)
for _t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
    register_module_kind(_t, Kind.BATCHNORM)
for _t in (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LocalResponseNorm,
):
    register_module_kind(_t, Kind.NORM)
for _t in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU):
    register_module_kind(_t, Kind.RELU)
for _t in (
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
):
    register_module_kind(_t, Kind.ACTIVATION)
for _t in (nn.Sigmoid, nn.Hardsigmoid):
    register_module_kind(_t, Kind.GATE)
for _t in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d):
    register_module_kind(_t, Kind.MAXPOOL)
for _t in (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d):
    register_module_kind(_t, Kind.AVGPOOL)
for _t in (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
):
    register_module_kind(_t, Kind.ADAPTIVEPOOL)
for _t in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout):
    register_module_kind(_t, Kind.DROPOUT)

for _f in {F.relu, torch.relu, F.relu_, torch.relu_, F.relu6, F.leaky_relu}:
    register_function_kind(_f, Kind.RELU)
for _f in {F.gelu, F.silu, F.hardswish, F.elu, F.selu, F.mish, torch.tanh, F.softplus, F.hardtanh}:
    register_function_kind(_f, Kind.ACTIVATION)
for _f in {F.layer_norm, F.group_norm}:
    register_function_kind(_f, Kind.NORM)
for _f in {torch.sigmoid, F.sigmoid, F.hardsigmoid}:
    register_function_kind(_f, Kind.GATE)
for _f in (F.max_pool1d, F.max_pool2d, F.max_pool3d):
    register_function_kind(_f, Kind.MAXPOOL)
for _f in (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d):
    register_function_kind(_f, Kind.AVGPOOL)
for _f in (
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.adaptive_max_pool2d,
):
    register_function_kind(_f, Kind.ADAPTIVEPOOL)
for _f in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d):
    register_function_kind(_f, Kind.DROPOUT)
for _m, _k in (
    ("relu", Kind.RELU),
    ("relu_", Kind.RELU),
    ("sigmoid", Kind.GATE),
    ("tanh", Kind.ACTIVATION),
):
    register_function_kind(_m, _k)


def module_at(root: nn.Module, target: str) -> nn.Module:
    """``root.get_submodule(target)`` without its checks (~20x faster; surgery calls it per node)."""
    mod = root
    try:
        for atom in target.split("."):
            mod = mod._modules[atom]  # type: ignore[assignment]
    except (KeyError, TypeError):
        return root.get_submodule(target)  # its error message names what is missing
    if mod is None:
        return root.get_submodule(target)
    return mod


def kind_of(gm: fx.GraphModule, node: fx.Node) -> Kind | None:
    """The layer kind of ``node``, or None when the node is not a layer."""
    if node.op == "call_module":
        mod = module_at(gm, node.target)  # type: ignore[arg-type]
        kind = _MODULE_KINDS.get(type(mod))
        if kind is None:
            for t, k in _MODULE_KINDS.items():
                if isinstance(mod, t):
                    kind = k
                    break
        if kind is None:
            # an unknown leaf module with weights (attention, embedding, ...) is a layer of type "other"
            return Kind.OTHER if any(True for _ in mod.parameters(recurse=False)) else None
        if kind is Kind.CONV and mod.groups > 1:  # type: ignore[union-attr]
            return Kind.CONV_DW if mod.groups == mod.in_channels else Kind.CONV_GROUPED  # type: ignore[union-attr]
        return kind
    if node.op == "call_function":
        return _FUNCTION_KINDS.get(node.target)
    if node.op == "call_method":
        return _METHOD_KINDS.get(node.target)  # type: ignore[arg-type]
    return None
