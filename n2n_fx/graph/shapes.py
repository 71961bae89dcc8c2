"""Shape propagation on meta tensors: every node gets its output value without real compute.

Modules run through ``torch.func.functional_call`` with meta copies of their parameters,
so nothing is allocated at real size and the model itself is never touched.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from ..layers import spec_for
from .kinds import module_at

__all__ = [
    "META_KEY",
    "INPUT_SIZE_KEY",
    "run_meta",
    "meta_like",
    "meta_value",
    "node_shape",
    "run_node_meta",
    "call_module_meta",
    "call_function_meta",
]

META_KEY = "n2n_val"  # node.meta key holding the node's output on the meta device
INPUT_SIZE_KEY = "n2n_input_size"  # placeholder node.meta key: example input shape (C, H, W), set by tracing


def meta_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device="meta")


def _meta_state(module: nn.Module) -> dict[str, torch.Tensor]:
    state = {k: meta_like(v) for k, v in module.named_parameters(recurse=True)}
    state.update({k: meta_like(v) for k, v in module.named_buffers(recurse=True) if v is not None})
    return state


def call_module_meta(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """Run ``module`` on meta inputs, with meta stand-ins for its weights.

    A module whose ``LayerSpec`` has a shape rule (convs, linears, norms, activations) is
    answered by it, with the checks its forward makes; everything else runs under
    ``functional_call`` on meta.
    """
    if len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
        shape = spec_for(module).out_shape(module, args[0])
        if shape is not None:
            return torch.empty(shape, dtype=args[0].dtype, device="meta")
    try:
        return torch.func.functional_call(module, _meta_state(module), args, kwargs)
    except Exception:  # not swallowed: the run on zeros raises again if the input does not fit
        # data-dependent modules (user leaf modules) cannot run on meta: run on zeros once
        real = _map_tensors(lambda t: torch.zeros(t.shape, dtype=t.dtype), (args, kwargs))
        with torch.no_grad():
            out = module(*real[0], **real[1])
        return _map_tensors(meta_like, out)


def _map_tensors(fn, x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_map_tensors(fn, v) for v in x)
    if isinstance(x, dict):
        return {k: _map_tensors(fn, v) for k, v in x.items()}
    return x


# element-wise binary ops whose meta output is the broadcast of two same-dtype tensors
_BROADCAST = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul}


def call_function_meta(fn: Callable, args: tuple, kwargs: dict) -> Any:
    """``fn(*args, **kwargs)`` on meta values; residual adds and gates by the broadcast rule.

    (Running ``add`` on meta tensors goes through ``torch._refs``, ~1 ms a call; a
    ResNet-152 has 50 of them, so surgery answers them directly.)
    """
    if fn in _BROADCAST and len(args) == 2 and not kwargs:
        a, b = args
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype:
            return torch.empty(torch.broadcast_shapes(a.shape, b.shape), dtype=a.dtype, device="meta")
    return fn(*args, **kwargs)


def _fetch_attr(gm: nn.Module, target: str) -> Any:
    obj: Any = gm
    for atom in target.split("."):
        obj = getattr(obj, atom)
    return obj


def run_node_meta(gm: fx.GraphModule, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
    """Evaluate one node on meta values, reading its inputs from ``env``."""
    args = fx.node.map_arg(node.args, lambda n: env[n])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
    if node.op == "get_attr":
        val = _fetch_attr(gm, node.target)
        return meta_like(val) if isinstance(val, torch.Tensor) else val
    if node.op == "call_module":
        return call_module_meta(module_at(gm, node.target), args, kwargs)
    if node.op == "call_function":
        fn: Callable = node.target  # type: ignore[assignment]
        return call_function_meta(_INPLACE_TO_OUT.get(fn, fn), args, kwargs)
    if node.op == "call_method":
        self_obj, *rest = args
        return getattr(self_obj, node.target)(*rest, **kwargs)
    if node.op == "output":
        return args[0]
    raise RuntimeError(f"cannot evaluate node {node.name} of op {node.op}")


# In-place operators traced from `out += x` must not alias meta values between nodes.
_INPLACE_TO_OUT = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


def meta_value(x: Any) -> Any:
    """Meta copy of a (nested) example input."""
    if isinstance(x, torch.Tensor):
        return meta_like(x)
    if isinstance(x, (list, tuple)):
        return type(x)(meta_value(v) for v in x)
    if isinstance(x, dict):
        return {k: meta_value(v) for k, v in x.items()}
    return x


def run_meta(gm: fx.GraphModule, *inputs: Any) -> Any:
    """Propagate meta values through ``gm``; store each in ``node.meta[META_KEY]``.

    Returns the meta value of the graph output. Inputs may be real or meta tensors.
    """
    env: dict[fx.Node, Any] = {}
    it = iter(inputs)
    out = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            try:
                val = meta_value(next(it))
            except StopIteration:
                val = node.args[0] if node.args else None  # default value
        else:
            val = run_node_meta(gm, node, env)
        env[node] = val
        node.meta[META_KEY] = val
        if node.op == "output":
            out = val
    return out


def node_shape(node: fx.Node) -> torch.Size | None:
    """The output shape of a tensor node after ``run_meta``; None for non-tensors."""
    val = node.meta.get(META_KEY)
    return val.shape if isinstance(val, torch.Tensor) else None
