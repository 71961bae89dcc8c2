"""A traced teacher as plain data: rebuilt without the user's Python class, and without unpickling code.

``compress()`` takes the user's own ``nn.Module``; a run directory that pickled it could only
be opened where that class is importable. ``graph_to_state`` instead stores the traced graph:
every node (op, name, target, arguments), each leaf module as its ``torch.nn`` class name and
constructor-set attributes, and the weights. ``graph_from_state`` rebuilds an equal
``GraphModule`` calling only ``torch``, ``operator`` and a few builtins, so the file loads
with ``torch.load(weights_only=True)`` and from the command line.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from n2n_fx import trace
    >>> class MyNet(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 10)
    ...     def forward(self, x):
    ...         return self.fc(self.conv(x).mean((2, 3)))
    >>> gm = trace(MyNet(), input_size=(1, 28, 28))
    >>> back = graph_from_state(graph_to_state(gm))  # same nodes, same weights, no MyNet needed
    >>> x = torch.randn(2, 1, 28, 28)
    >>> torch.equal(back(x), gm(x)), any(isinstance(m, MyNet) for m in back.modules())
    (True, False)
"""

from __future__ import annotations

import builtins
import importlib
import operator
from typing import Any

import torch
from torch import fx, nn
from torch.fx.node import _get_qualified_name

from ..errors import CheckpointError, ConfigError

__all__ = ["graph_to_state", "graph_from_state", "FX_FORMAT"]

FX_FORMAT = "n2n_fx.fx-graph/1"
_BUILTINS = {"getattr", "len", "int", "float", "max", "min", "abs", "tuple", "list", "slice", "range"}
_MODULE_KEYS = set(vars(nn.Module()))  # what nn.Module.__init__ sets: rebuilt, never stored


# -- values --------------------------------------------------------------------------------------
def _enc(v: Any) -> Any:
    if isinstance(v, fx.Node):
        return ("node", v.name)
    if v is None or isinstance(v, (bool, int, float, str)):
        return ("v", v)
    if isinstance(v, torch.Size):
        return ("tuple", [_enc(x) for x in v])
    if isinstance(v, (tuple, list)):
        return ("tuple" if isinstance(v, tuple) else "list", [_enc(x) for x in v])
    if isinstance(v, dict):
        return ("dict", [[_enc(k), _enc(x)] for k, x in v.items()])
    if isinstance(v, slice):
        return ("slice", [_enc(v.start), _enc(v.stop), _enc(v.step)])
    if v is Ellipsis:
        return ("ellipsis", None)
    if isinstance(v, torch.dtype):
        return ("dtype", str(v).removeprefix("torch."))
    if isinstance(v, torch.device):
        return ("device", str(v))
    if isinstance(v, torch.memory_format):
        return ("memory_format", str(v).removeprefix("torch."))
    raise ConfigError(
        f"cannot store a {type(v).__name__} argument of the traced graph; save the run with a named model"
    )


def _dec(v: Any, nodes: dict[str, fx.Node]) -> Any:
    tag, x = v
    if tag == "node":
        return nodes[x]
    if tag == "v":
        return x
    if tag in ("tuple", "list"):
        items = [_dec(i, nodes) for i in x]
        return tuple(items) if tag == "tuple" else items
    if tag == "dict":
        return {_dec(k, nodes): _dec(i, nodes) for k, i in x}
    if tag == "slice":
        return slice(*(_dec(i, nodes) for i in x))
    if tag == "ellipsis":
        return Ellipsis
    if tag in ("dtype", "memory_format"):
        out = getattr(torch, x, None)
        if not isinstance(out, (torch.dtype, torch.memory_format)):
            raise CheckpointError(f"unknown torch {tag} {x!r} in a stored graph")
        return out
    if tag == "device":
        return torch.device(x)
    raise CheckpointError(f"unknown value tag {tag!r} in a stored graph")


# -- functions and modules -----------------------------------------------------------------------
def _resolve(name: str) -> Any:
    """``torch...``, ``operator.x``, ``math.x`` or an allowed builtin; CheckpointError for anything else."""
    if name in _BUILTINS:
        return getattr(builtins, name)
    root = name.split(".")[0]
    if root not in ("torch", "_operator", "operator", "math"):
        raise CheckpointError(f"stored graph calls {name}, which is not a torch/operator function; refusing it")
    if root in ("_operator", "operator"):
        return getattr(operator, name.split(".", 1)[1])
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for p in parts[cut:]:
            obj = getattr(obj, p)
        return obj
    raise CheckpointError(f"stored graph calls {name}, which this torch does not have")


def _module_state(mod: nn.Module, path: str) -> dict[str, Any]:
    cls = type(mod)
    if not cls.__module__.startswith("torch.nn"):
        raise ConfigError(
            f"leaf module {path} is a {cls.__name__}, not a torch.nn module, so it cannot be stored as a graph"
        )
    attrs = {k: _enc(v) for k, v in vars(mod).items() if k not in _MODULE_KEYS}
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "attrs": attrs,
        "training": mod.training,
        "params": {k: p is not None for k, p in mod._parameters.items()},
        "buffers": {k: b is not None for k, b in mod._buffers.items()},
        "persistent": sorted(set(mod._buffers) - mod._non_persistent_buffers_set),
    }


def _module_from(d: dict[str, Any], path: str, tensors: dict[str, torch.Tensor]) -> nn.Module:
    cls = _resolve(d["class"])
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError(f"stored module {path} names {d['class']}, which is not a torch.nn module")
    mod = cls.__new__(cls)
    nn.Module.__init__(mod)
    for k, v in d["attrs"].items():
        setattr(mod, k, _dec(v, {}))
    for k, present in d["params"].items():
        mod.register_parameter(k, nn.Parameter(tensors[f"{path}.{k}"].clone()) if present else None)
    for k, present in d["buffers"].items():
        persistent = k in d["persistent"]
        mod.register_buffer(k, tensors[f"{path}.{k}"].clone() if present else None, persistent=persistent)
    mod.train(d["training"])
    return mod


# -- the graph -----------------------------------------------------------------------------------
def graph_to_state(gm: fx.GraphModule) -> dict[str, Any]:
    """The graph, leaf modules and tensors of ``gm`` as data that ``torch.load(weights_only=True)`` reads."""
    nodes, modules, tensors = [], {}, {}
    for node in gm.graph.nodes:
        target: Any = node.target
        if node.op == "call_function":
            target = _get_qualified_name(node.target)
            _resolve(target)  # fail now, not when loading
        elif node.op == "call_module" and target not in modules:
            mod = gm.get_submodule(target)
            modules[target] = _module_state(mod, target)
            for k, t in list(mod._parameters.items()) + list(mod._buffers.items()):
                if t is not None:
                    tensors[f"{target}.{k}"] = t.detach().cpu().clone()
        elif node.op == "get_attr":
            value = _get_attr(gm, target)
            if not isinstance(value, torch.Tensor):
                raise ConfigError(f"graph attribute {target} is a {type(value).__name__}, not a tensor")
            tensors[target] = value.detach().cpu().clone()
        nodes.append(
            {
                "op": node.op,
                "name": node.name,
                "target": target,
                "args": _enc(tuple(node.args)),
                "kwargs": _enc(dict(node.kwargs)),
                "meta": {k: list(v) for k, v in node.meta.items() if k == "n2n_input_size" and v is not None},
            }
        )
    return {"format": FX_FORMAT, "nodes": nodes, "modules": modules, "tensors": tensors, "training": gm.training}


def _get_attr(gm: nn.Module, path: str) -> Any:
    obj: Any = gm
    for p in path.split("."):
        obj = getattr(obj, p)
    return obj


def graph_from_state(state: dict[str, Any]) -> fx.GraphModule:
    """Rebuild the ``GraphModule`` stored by ``graph_to_state`` (same node names, same weights)."""
    if not isinstance(state, dict) or state.get("format") != FX_FORMAT:
        raise CheckpointError(f"not a stored graph of format {FX_FORMAT}")
    tensors = state["tensors"]
    root: dict[str, Any] = {}
    for path, d in state["modules"].items():
        root[path] = _module_from(d, path, tensors)
    graph = fx.Graph()
    made: dict[str, fx.Node] = {}
    for n in state["nodes"]:
        args, kwargs = _dec(n["args"], made), _dec(n["kwargs"], made)
        target = n["target"]
        if n["op"] == "call_function":
            target = _resolve(target)
        elif n["op"] == "get_attr":
            root[target] = tensors[target].clone()
        if n["op"] == "output":
            node = graph.output(args[0])
        else:
            node = graph.create_node(n["op"], target, args, kwargs, name=n["name"])
        node.meta.update({k: tuple(v) for k, v in n["meta"].items()})
        if node.name != n["name"]:
            raise CheckpointError(f"stored graph has a clashing node name {n['name']!r}")
        made[n["name"]] = node
    graph.lint()
    gm = fx.GraphModule(root, graph)
    gm.train(state["training"])
    return gm
