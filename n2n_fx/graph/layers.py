"""The ordered layer list a policy acts on, with what each layer's legal actions are."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx, nn

from ..layers import kernel_after, spec_for
from .blocks import Block, find_blocks, skip_positions
from .branches import residual_join
from .channels import ChannelSpaces, analyze_channels
from .cost import node_flops, node_params
from .kinds import Kind, kind_of, module_at
from .shapes import META_KEY
from .spatial import hard_coded_reshapes, upstream_of

__all__ = ["Layer", "Analysis", "analyze", "find_layers", "kernel_after", "VARIABLES"]

VARIABLES = ("out", "kernel", "heads")  # configurable variables a shrink action can act on (id = position)


@dataclass(frozen=True)
class Layer:
    """One layer of the teacher: what it is, where it sits, and what may be done to it."""

    index: int  # position in the layer sequence (graph order)
    node: str  # fx node name (unique in the graph)
    target: str  # module path, or function / method name
    kind: Kind  # layer type
    kernel: int  # largest kernel side (0 for non-spatial layers)
    stride: int  # largest stride (1 if none)
    padding: int  # largest padding (0 if none)
    in_size: int  # input channels / features
    out: int  # output channels / features (paper's n)
    s_start: int  # layers since the enclosing skip block began (0 outside blocks)
    s_end: int  # layers until the enclosing block ends (0 outside blocks)
    params: int  # parameters owned by the layer
    flops: int  # FLOPs per sample
    removable: bool  # may the removal policy remove it?
    fixed_reason: str  # why not, when not removable ("" otherwise)
    shrinkable: tuple[str, ...]  # variables the shrink policy may change: "out", "kernel"
    out_owner: str  # node that decides this layer's output channels (coupled group owner)
    branch: str = ""  # residual add whose branch removing this layer empties ("": a plain bypass)
    heads: int = 0  # attention heads (0: not attention)


@dataclass
class Analysis:
    """Everything surgery and features need to know about one GraphModule."""

    gm: fx.GraphModule
    layers: list[Layer]
    blocks: list[Block]
    spaces: ChannelSpaces
    by_node: dict[str, Layer] = field(default_factory=dict)

    def layer(self, name: str) -> Layer:
        """The layer with this node name or module path."""
        if name in self.by_node:
            return self.by_node[name]
        for lay in self.layers:
            if lay.target == name:
                return lay
        raise KeyError(name)


def _pair_max(v) -> int:
    if isinstance(v, (tuple, list)):
        return int(max(v)) if v else 0
    return int(v) if isinstance(v, int) else 0


def _conv_geometry(mod: nn.Module) -> tuple[int, int, int]:
    k = _pair_max(getattr(mod, "kernel_size", 0))
    s = _pair_max(getattr(mod, "stride", 1)) or 1
    p = getattr(mod, "padding", 0)
    p = 0 if isinstance(p, str) else _pair_max(p)
    return k, s, p


def _functional_geometry(node: fx.Node) -> tuple[int, int, int]:
    def arg(i: int, key: str, default):
        return node.kwargs.get(key, node.args[i] if len(node.args) > i else default)

    if "pool" in getattr(node.target, "__name__", "") and "adaptive" not in node.target.__name__:
        k = _pair_max(arg(1, "kernel_size", 0))
        s = arg(2, "stride", None)
        s = k if s in (None, []) else _pair_max(s)
        return k, s or 1, _pair_max(arg(3, "padding", 0))
    return 0, 1, 0


_SPATIAL = (Kind.CONV, Kind.CONV_DW, Kind.CONV_GROUPED, Kind.MAXPOOL, Kind.AVGPOOL, Kind.ADAPTIVEPOOL)
_PASS_THROUGH = (Kind.RELU, Kind.ACTIVATION, Kind.GATE, Kind.DROPOUT, Kind.BATCHNORM, Kind.NORM)


def _feeds_classifier(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Does the node's output reach a flatten, reshape, Linear or the output before any spatial op?"""
    todo, seen = [node], set()
    while todo:
        cur = todo.pop()
        for u in cur.users:
            if u in seen:
                continue
            seen.add(u)
            if u.op == "output":
                return True
            k = kind_of(gm, u)
            if k is Kind.LINEAR:
                return True
            if k is None:
                name = u.target if isinstance(u.target, str) else getattr(u.target, "__name__", "")
                if u.op == "call_module":
                    name = type(module_at(gm, u.target)).__name__.lower()
                if any(w in name for w in ("flatten", "view", "reshape", "squeeze")):
                    return True
                if len(u.all_input_nodes) == 1:
                    todo.append(u)
            elif k in _PASS_THROUGH:
                todo.append(u)
    return False


def analyze(gm: fx.GraphModule) -> Analysis:
    """Layers, blocks and channel spaces of a GraphModule traced by ``n2n_fx.trace``."""
    if not any(META_KEY in n.meta for n in gm.graph.nodes):
        raise ValueError("GraphModule has no shape metadata; get it from n2n_fx.trace(...)")
    spaces = analyze_channels(gm)
    blocks = find_blocks(gm)
    skips = skip_positions(gm, blocks)
    sizes = {name: ci.size for name, ci in spaces.info.items() if ci.dim is not None}
    before_reshape = upstream_of(hard_coded_reshapes(gm, sizes))
    owners: dict[int, str] = {}
    layers: list[Layer] = []
    for node in gm.graph.nodes:
        kind = kind_of(gm, node)
        if kind is None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        val = node.meta.get(META_KEY)
        if kind is Kind.ATTENTION and isinstance(val, (tuple, list)) and val:
            val = val[0]  # (output, attention weights)
        src = node.args[0].meta.get(META_KEY)
        if not isinstance(val, torch.Tensor) or not isinstance(src, torch.Tensor):
            continue
        mod = module_at(gm, node.target) if node.op == "call_module" else None
        k, s, p = _conv_geometry(mod) if mod is not None else _functional_geometry(node)
        ci_out = spaces.info.get(node.name)
        ci_in = spaces.info.get(node.args[0].name)
        out = ci_out.size if ci_out and ci_out.dim is not None else int(val.shape[-1] if val.dim() else 0)
        in_size = ci_in.size if ci_in and ci_in.dim is not None else int(src.shape[-1] if src.dim() else 0)
        axis = spec_for(mod).in_axis(mod, src.dim()) if mod is not None else None
        if axis is not None and (ci_in is None or ci_in.dim != axis):
            in_size = int(src.shape[axis])  # the weights read another axis than the tracked channels
        cls_out = spaces.class_of(node.name)
        changes_channels = in_size != out or (ci_in is not None and ci_out is not None and ci_in.root != ci_out.root)
        fixed = ""
        if cls_out is not None and cls_out.pinned and changes_channels and node.name in cls_out.producers:
            fixed = f"its output size is fixed ({cls_out.pinned[0]})"
        elif cls_out is not None and cls_out.pinned and in_size != out:
            fixed = f"removal changes a fixed size ({cls_out.pinned[0]})"
        if not fixed and kind is Kind.OTHER and tuple(val.shape) != tuple(src.shape):
            fixed = "unknown layer type that changes its input's shape"
        if (
            not fixed
            and node.name in before_reshape
            and kind in _SPATIAL
            and val.dim() >= 3
            and src.dim() == val.dim()
            and tuple(val.shape[2:]) != tuple(src.shape[2:])
        ):
            fixed = f"changes the spatial size that {before_reshape[node.name]} hard-codes (windowed reshape)"
        if not fixed and kind is Kind.ADAPTIVEPOOL and _feeds_classifier(gm, node):
            fixed = "global pool before the classifier (removing it only inflates the Linear input)"
        branch = ""
        if (fixed and cls_out is not None and cls_out.pinned) or kind is Kind.ATTENTION:
            # writes a fixed-size residual stream: removable as its whole branch, if it has one
            branch = residual_join(gm, node) or ""
            if branch:
                fixed = ""
            elif kind is Kind.ATTENTION:
                fixed = fixed or "attention outside a residual branch"
        shrink: list[str] = []
        owner = node.name
        if cls_out is not None and node.name in cls_out.producers:
            owner = owners.setdefault(cls_out.root, node.name)
            if cls_out.shrinkable and owner == node.name:
                shrink.append("out")
        elif cls_out is not None and cls_out.producers:
            owner = cls_out.producers[0]
        if mod is not None:
            shrink.extend(spec_for(mod).variables(mod))
        s_start, s_end = skips.get(node.name, (0, 0))
        layers.append(
            Layer(
                index=len(layers),
                node=node.name,
                target=str(node.target)
                if node.op == "call_module"
                else getattr(node.target, "__name__", str(node.target)),
                kind=kind,
                kernel=k,
                stride=s,
                padding=p,
                in_size=in_size,
                out=out,
                s_start=s_start,
                s_end=s_end,
                params=node_params(gm, node),
                flops=node_flops(gm, node),
                removable=not fixed,
                fixed_reason=fixed,
                shrinkable=tuple(shrink),
                out_owner=owner,
                branch=branch,
                heads=int(getattr(mod, "num_heads", 0)) if kind is Kind.ATTENTION else 0,
            )
        )
    return Analysis(gm, layers, blocks, spaces, {lay.node: lay for lay in layers})


def find_layers(gm: fx.GraphModule) -> list[Layer]:
    """The ordered list of layers of ``gm`` (see ``analyze``)."""
    return analyze(gm).layers
