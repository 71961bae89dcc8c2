"""Layer kinds: which fx nodes are layers a policy acts on, and their type code.

A module's kind comes from its ``LayerSpec`` (``n2n_fx.layers``); this module maps
functions and method names to a ``Kind``. Together they are the only place that decides
what a "layer" is. Reshapes (flatten, view), joins (add, cat) and weightless unknown
modules are not layers; an unknown module with weights is a layer of kind "other".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import ConfigError
from ..layers import KINDS, Kind, spec_for

__all__ = ["Kind", "KINDS", "kind_of", "register_function_kind", "module_at"]


_FUNCTION_KINDS: dict[object, Kind] = {}
_METHOD_KINDS: dict[str, Kind] = {}


def register_function_kind(fn: object, kind: Kind) -> None:
    """Declare that calls of ``fn`` (a function, or a method name as str) are layers of ``kind``.

    Module types get their kind from their ``LayerSpec`` (``n2n_fx.layers.register_layer``).
    """
    table = _METHOD_KINDS if isinstance(fn, str) else _FUNCTION_KINDS
    if fn in table:
        raise ConfigError(f"{fn!r} already has layer kind {table[fn].value}")  # type: ignore[index]
    table[fn] = kind  # type: ignore[index]


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
        return spec_for(mod).layer_kind(mod)
    if node.op == "call_function":
        return _FUNCTION_KINDS.get(node.target)
    if node.op == "call_method":
        return _METHOD_KINDS.get(node.target)  # type: ignore[arg-type]
    return None
