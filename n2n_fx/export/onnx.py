"""ONNX export of any valid student: adaptive pooling becomes fixed matrix products first.

Surgery inserts ``adaptive_avg_pool2d`` to match spatial sizes in joins (e.g. 5x5 -> 3x3),
and ONNX has no adaptive pooling: the exporter refuses sizes that do not divide, and any size
it cannot see. For a fixed input size every adaptive average pool is a linear map per spatial
dimension, ``out = P @ x`` with ``P[i, j] = 1 / len(window i)`` on window ``i`` of PyTorch's
adaptive pooling. ``fix_adaptive_pools`` replaces each one by those products (``MatMul`` in
ONNX), equal to the original up to float rounding.

``export_onnx`` (the ``onnx`` extra) then writes the fixed student with a symbolic batch
dimension named ``batch``.

Example:
    >>> student = fx.symbolic_trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(3)))
    >>> x = torch.randn(2, 1, 7, 7)
    >>> fixed = fix_adaptive_pools(student, x)  # 5x5 -> 3x3: two matrix products
    >>> [type(m).__name__ for m in fixed.children()]
    ['Conv2d', 'FixedAdaptiveAvgPool']
    >>> torch.allclose(fixed(x), student(x), atol=1e-6)
    True
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ConfigError
from ..storage import atomic_write_bytes
from .program import batch_dynamic, batch_example, evaluating

__all__ = ["FixedAdaptiveAvgPool", "fix_adaptive_pools", "onnx_bytes", "export_onnx"]

_FUNCTIONS = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3}
_MODULES = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}


def _pool_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """``(size_out, size_in)``: row i averages PyTorch's adaptive window i."""
    p = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start, end = (i * size_in) // size_out, math.ceil((i + 1) * size_in / size_out)
        p[i, start:end] = 1.0 / (end - start)
    return p


class FixedAdaptiveAvgPool(nn.Module):
    """Adaptive average pooling of one fixed input size, as one matrix product per spatial dimension."""

    def __init__(self, size_in: Sequence[int], size_out: Sequence[int | None]) -> None:
        super().__init__()
        self.size_in = tuple(int(s) for s in size_in)  # (D1, ..., Dk) spatial input size
        self.size_out = tuple(int(o) if o is not None else s for s, o in zip(self.size_in, size_out, strict=True))
        for d, (a, b) in enumerate(zip(self.size_in, self.size_out, strict=True)):
            self.register_buffer(f"p{d}", _pool_matrix(a, b))  # (out_d, in_d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, *size_in) -> (N, C, *size_out)
        k = len(self.size_in)
        for d in range(k):
            axis = x.dim() - k + d
            x = torch.matmul(getattr(self, f"p{d}"), x.movedim(axis, -2)).movedim(-2, axis)
        return x

    def extra_repr(self) -> str:
        return f"{self.size_in} -> {self.size_out}"


def _pool_of(gm: fx.GraphModule, node: fx.Node) -> tuple[int, Sequence[int | None]] | None:
    """(spatial dims, output size) of an adaptive average pool node, else None."""
    if node.op == "call_function" and node.target in _FUNCTIONS:
        k = _FUNCTIONS[node.target]
        out = node.args[1] if len(node.args) > 1 else node.kwargs["output_size"]
    elif node.op == "call_module" and type(gm.get_submodule(str(node.target))) in _MODULES:
        mod = gm.get_submodule(str(node.target))
        k, out = _MODULES[type(mod)], mod.output_size
    else:
        return None
    return k, (tuple(out) if isinstance(out, (tuple, list)) else (out,) * k)


def fix_adaptive_pools(gm: fx.GraphModule, example_input: torch.Tensor) -> fx.GraphModule:
    """A copy of ``gm`` whose adaptive average pools are ``FixedAdaptiveAvgPool`` for ``example_input``'s size.

    ``gm`` is not modified. Pools to size 1 everywhere stay (ONNX's GlobalAveragePool)."""
    gm = fx.GraphModule(gm, gm.graph)  # shares weights, owns its graph
    gm.graph = _copy_graph(gm.graph)
    was = gm.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(example_input)
    gm.train(was)
    n = 0
    for node in list(gm.graph.nodes):
        pool = _pool_of(gm, node)
        if pool is None:
            continue
        k, out = pool
        shape = node.args[0].meta["tensor_meta"].shape  # (N, C, *spatial)
        if all(o == 1 for o in out):
            continue
        name = f"fixed_pool_{n}"
        n += 1
        gm.add_submodule(name, FixedAdaptiveAvgPool(tuple(shape[-k:]), out))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()  # the copy's own references: ``gm``'s modules stay
    gm.graph.lint()
    gm.recompile()
    return gm


def _copy_graph(graph: fx.Graph) -> fx.Graph:
    new = fx.Graph()
    out = new.graph_copy(graph, {})
    new.output(out)
    return new


def onnx_bytes(gm: fx.GraphModule, example_input: torch.Tensor) -> bytes:
    """``gm`` (in eval mode) as an ONNX model, in memory: its adaptive pools fixed for
    ``example_input``'s size, its batch dimension symbolic (``dim_param`` ``"batch"``).

    ConfigError (one line) when the onnx packages are missing or ONNX cannot express the student."""
    for package in ("onnx", "onnxscript"):  # the torch.export-based exporter needs both
        if importlib.util.find_spec(package) is None:
            raise ConfigError(f"ONNX export needs the {package} package; pip install 'n2n-fx[onnx]'")
    x = batch_example(example_input)
    with evaluating(gm):  # the copy shares gm's modules: gm's mode is restored after the export
        ready = fix_adaptive_pools(gm, x)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress
                warnings.simplefilter("ignore")  # onnxscript's notes on op versions; a failure raises
                program = torch.onnx.export(
                    ready,
                    (x,),
                    None,
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_shapes=batch_dynamic(),
                    dynamo=True,
                    verbose=False,
                )
        except torch.onnx.errors.OnnxExporterError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"ONNX cannot express this student ({first[:160]}); export it as pt2 or fx instead"
            ) from None
    return program.model_proto.SerializeToString()


def export_onnx(gm: fx.GraphModule, path: str | Path | BinaryIO, example_input: torch.Tensor) -> Path | BinaryIO:
    """Write ``onnx_bytes(gm, example_input)`` to a path (atomically) or a binary buffer; return it."""
    data = onnx_bytes(gm, example_input)
    if hasattr(path, "write"):
        path.write(data)
        return path
    atomic_write_bytes(path, data)
    return Path(path)
