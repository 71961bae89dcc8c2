"""Layer specs: everything n2n_fx knows of one module type, registered once per type.

A ``LayerSpec`` answers, for modules of its types: the layer kind a policy sees, which
input axis its weights index, how its output shape follows from its input (the checks its
forward makes included), its FLOPs, how to rebuild it for new channels while inheriting
the teacher's weights, the importance of its output channels, how much it uses each input
channel, and the shrink variables it offers besides output channels. ``graph/`` (kinds,
shapes, channels, cost, layers), ``rewrite/`` (plan, importance, rebuild) and ``reward/``
(FLOPs) read specs; none of them tests module types itself.

Adding a layer type is one subclass with ``@register_layer(MyModule)`` and one row in
``tests/test_specs.py`` (which checks the shape rule against a real forward and the FLOPs
against ``torch.utils.flop_counter.FlopCounterMode``). Registering a type twice raises.
Unregistered module types get ``UNKNOWN_WEIGHTED`` (kind "other", channels pinned: surgery
never changes what flows in or out of it) or ``UNKNOWN_STATELESS`` (not a layer).

A registration (``tests/test_specs.py::test_adding_a_layer_type_is_one_spec`` runs a full
one; registering here would change the registry for the whole process)::

    @register_layer(MyScale)
    class MyScaleSpec(LayerSpec):
        kind = Kind.ACTIVATION
        same_shape = True

Example:
    >>> spec_for(nn.Conv2d(1, 8, 3)).kind, spec_for(nn.ReLU()).kind
    (<Kind.CONV: 'conv'>, <Kind.RELU: 'relu'>)
    >>> spec_for(nn.Module()) is UNKNOWN_STATELESS
    True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError, RepairError
from .kind import Kind
from .tensors import identity, shell

__all__ = [
    "LayerSpec",
    "RebuildContext",
    "Rebuilt",
    "register_layer",
    "spec_for",
    "registered_specs",
    "UNKNOWN_WEIGHTED",
    "UNKNOWN_STATELESS",
]


@dataclass
class RebuildContext:
    """What a spec needs to rebuild one module."""

    in_idx: torch.Tensor  # (C_in',) teacher input channel per student input channel, -1 = none
    in_size: int  # student input channels (or features)
    out_idx: torch.Tensor | None  # (C_out',) teacher output channels to keep; None = decided by input
    coupled: bool  # output channels are the input channels (depthwise / grouped with in == out)
    kernel: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # new (kernel_size, padding)
    stride: int | None = None  # new stride (moved from a removed layer)
    heads: torch.Tensor | None = None  # (H',) teacher attention heads to keep; None = all
    notes: list[str] = field(default_factory=list)  # what the spec changed, for the diff


@dataclass
class Rebuilt:
    module: nn.Module  # the student's module
    out_idx: torch.Tensor | None  # teacher index per output channel (-1 = none); None = same as input


class LayerSpec:
    """Defaults: a module that is not a layer, keeps its input's shape unknown (runs on meta),
    costs no FLOPs and cannot be rebuilt for a changed input when it has weights."""

    types: tuple[type, ...] = ()  # set by ``register_layer``
    kind: Kind | None = None  # layer kind; None: not a layer the policies act on
    same_shape: bool = False  # output shape == input shape (the shape rule needs no forward)
    pins_channels: bool = False  # surgery may not change the channels flowing in or out

    def layer_kind(self, m: nn.Module) -> Kind | None:
        """The kind of this module (convs distinguish depthwise / grouped)."""
        return self.kind

    weight_axis: int | None = None  # input axis its weights index: 1 (channels first), -1 (last), None

    def in_axis(self, m: nn.Module, ndim: int) -> int | None:
        """Axis of an ``ndim``-d input that the module's weights index (None: weights index no axis)."""
        if self.weight_axis == 1:
            return 1 if ndim >= 2 else None
        if self.weight_axis == -1:
            return ndim - 1 if ndim >= 1 else None
        return None

    def check(self, m: nn.Module, x: torch.Tensor) -> None:
        """Raise RuntimeError, as the forward would, when ``x`` does not fit the module."""

    def out_shape(self, m: nn.Module, x: torch.Tensor) -> torch.Size | None:
        """Output shape for a single tensor input ``x``, by the shape rule; None: run the forward on meta."""
        if self.same_shape:
            self.check(m, x)
            return x.shape
        return None

    def flops(self, m: nn.Module, args: tuple, out: object) -> int:
        """FLOPs (2 x multiply-accumulates, FlopCounterMode's convention) of one call on the whole batch."""
        return 0

    def rebuild(self, m: nn.Module, ctx: RebuildContext) -> Rebuilt:
        """A new module that fits the student's input, inheriting the teacher's weights by gathers."""
        if any(True for _ in m.parameters()) and not identity(ctx.in_idx, _in_features(m, ctx)):
            raise RepairError(f"{type(m).__name__} has weights and no rebuild rule; its input changed")
        if _stateless_builtin(m):
            return Rebuilt(shell(m), None)  # ReLU, pools, dropout, flatten: nothing to deep-copy
        return Rebuilt(copy.deepcopy(m), None)

    def importance(self, m: nn.Module) -> torch.Tensor | None:
        """Score per output channel (higher = keep), or None when the module has no output filters."""
        return None

    def input_use(self, m: nn.Module) -> torch.Tensor | None:
        """How much the module uses each input channel (L1 of its weights), or None."""
        return None

    def variables(self, m: nn.Module) -> tuple[str, ...]:
        """Shrink variables offered besides output channels (``("kernel",)``, ``("heads",)``)."""
        return ()

    def head_importance(self, m: nn.Module) -> torch.Tensor | None:
        """Score per attention head (higher = keep), for modules offering ``"heads"``; else None."""
        return None


def _stateless_builtin(m: nn.Module) -> bool:
    """A torch.nn module without tensors or children (its attributes are plain settings)."""
    return (
        type(m).__module__.startswith("torch.nn.modules.") and not m._parameters and not m._buffers and not m._modules
    )


def _in_features(module: nn.Module, ctx: RebuildContext) -> int:
    for attr in ("in_channels", "in_features", "num_features", "num_parameters", "embed_dim"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    return ctx.in_size


class _UnknownWeighted(LayerSpec):
    """A module type nobody registered that holds weights: a layer of kind "other", channels pinned."""

    kind = Kind.OTHER
    pins_channels = True


UNKNOWN_WEIGHTED = _UnknownWeighted()
UNKNOWN_STATELESS = LayerSpec()

_SPECS: dict[type, LayerSpec] = {}
_CACHE: dict[type, LayerSpec | None] = {}  # type -> its spec or its base's (None: unregistered)
_MISSING = object()


def register_layer(*types: type):
    """Class decorator: one instance of the ``LayerSpec`` subclass answers for ``types``.

    Registering a type that already has a spec raises ``ConfigError``.
    """

    def deco(cls: type[LayerSpec]) -> type[LayerSpec]:
        spec = cls()
        spec.types = tuple(types)
        for t in types:
            if t in _SPECS:
                raise ConfigError(f"{t.__name__} already has the layer spec {type(_SPECS[t]).__name__}")
        for t in types:
            _SPECS[t] = spec
        _CACHE.clear()
        return cls

    return deco


def spec_for(module: nn.Module) -> LayerSpec:
    """The spec of ``module``'s type (or of its nearest registered base class)."""
    t = type(module)
    spec = _CACHE.get(t, _MISSING)
    if spec is _MISSING:
        spec = _SPECS.get(t)
        if spec is None:
            for base in t.__mro__[1:]:
                if base in _SPECS:
                    spec = _SPECS[base]
                    break
        _CACHE[t] = spec
    if spec is not None:
        return spec
    return UNKNOWN_WEIGHTED if any(True for _ in module.parameters()) else UNKNOWN_STATELESS


def registered_specs() -> dict[type, LayerSpec]:
    """Every registered module type and its spec."""
    return dict(_SPECS)
