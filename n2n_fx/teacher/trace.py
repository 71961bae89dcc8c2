"""Trace a teacher into a torch.fx GraphModule with shape metadata on every node."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
from torch import fx, nn

from ..errors import ConfigError, TraceError
from ..graph.shapes import INPUT_SIZE_KEY, run_meta
from ..layers import registered_specs
from .zoo import build_model

__all__ = ["trace", "parse_input_size", "example_input_of", "input_size_of", "INPUT_SIZE_KEY"]


class _Tracer(fx.Tracer):
    """fx tracer that remembers which module it was inside when tracing failed."""

    def __init__(self, leaf_modules: Iterable[type] = ()) -> None:
        super().__init__()
        self._leaf_types = tuple(leaf_modules)
        self.stack: list[str] = []

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if self._leaf_types and isinstance(m, self._leaf_types):
            return True
        if type(m) in registered_specs():  # a registered layer (surgery's own student modules included)
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        self.stack.append(self.path_of_module(m) or type(m).__name__)
        out = super().call_module(m, forward, args, kwargs)
        self.stack.pop()
        return out


def parse_input_size(text: str | Sequence[int]) -> tuple[int, ...]:
    """Parse "3x32x32" (or a sequence) into a (C, H, W) tuple."""
    if isinstance(text, str):
        try:
            dims = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
        except ValueError:
            raise ConfigError(f"input size {text!r} is not like 3x32x32; give C x H x W") from None
    else:
        dims = tuple(int(v) for v in text)
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"input size {text!r} must be positive integers like 3x32x32")
    return dims


def input_size_of(gm: fx.GraphModule) -> tuple[int, ...] | None:
    """The (C, H, W) input shape recorded by ``trace``, or None."""
    for node in gm.graph.find_nodes(op="placeholder"):
        return node.meta.get(INPUT_SIZE_KEY)
    return None


def example_input_of(gm: fx.GraphModule, batch: int = 2) -> torch.Tensor:
    """A random example input of the shape the GraphModule was traced with."""
    size = input_size_of(gm)
    if size is None:
        raise ConfigError("this GraphModule was not traced by n2n_fx.trace; pass example_input")
    return torch.randn(batch, *size)


def trace(
    model: nn.Module | str,
    example_input: torch.Tensor | None = None,
    input_size: Sequence[int] | str | None = None,
    *,
    num_classes: int = 10,
    in_channels: int | None = None,
    leaf_modules: Iterable[type] = (),
) -> fx.GraphModule:
    """Trace ``model`` into a GraphModule whose nodes carry meta values (shapes).

    ``model`` is an ``nn.Module``, an ``fx.GraphModule`` (used as is, copied) or a model
    name (torchvision classifier or project model, built with ``num_classes`` and
    ``in_channels``). The input shape comes from ``example_input`` or ``input_size``
    (C, H, W); shapes are propagated on the meta device, never at real size.
    The teacher is never mutated: the returned GraphModule owns copies of its modules.

    Example:
        >>> gm = trace("resnet18", input_size=(3, 32, 32))
        >>> gm.graph.find_nodes(op="output")[0].meta["n2n_val"].shape
        torch.Size([2, 10])
    """
    if example_input is None and input_size is None:
        input_size = (in_channels or 3, 224, 224)
    if example_input is None:
        size = parse_input_size(input_size)  # type: ignore[arg-type]
        example_input = torch.empty((2, *size), device="meta")
    if in_channels is None:
        in_channels = int(example_input.shape[1]) if example_input.dim() > 1 else 3
    if isinstance(model, str):
        model = build_model(model, num_classes=num_classes, in_channels=in_channels)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"expected an nn.Module, fx.GraphModule or model name, got {type(model).__name__}")

    if isinstance(model, fx.GraphModule):
        gm = copy.deepcopy(model)
    else:
        model = copy.deepcopy(model)
        mode = model.training
        # Python-level `if self.training` branches (stochastic depth, aux heads) are frozen
        # at trace time: trace in eval mode so the graph is deterministic; leaf modules
        # (Dropout, BatchNorm) still follow train()/eval() afterwards.
        model.eval()
        tracer = _Tracer(leaf_modules)
        try:
            graph = tracer.trace(model)
        except Exception as e:  # fx raises many kinds of errors
            where = tracer.stack[-1] if tracer.stack else type(model).__name__
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TraceError(
                f"torch.fx cannot trace {type(model).__name__} (in module '{where}': {msg}); "
                f"pass leaf_modules=[...] for that module type, or trace it yourself and pass the fx.GraphModule"
            ) from None
        gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
        gm.train(mode)
    was_training = gm.training
    gm.eval()
    try:
        run_meta(gm, example_input)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TraceError(
            f"shape propagation failed for input shape {tuple(example_input.shape[1:])}: {msg}; check --input-size / example_input"
        ) from None
    finally:
        gm.train(was_training)
    for node in gm.graph.find_nodes(op="placeholder")[:1]:
        node.meta[INPUT_SIZE_KEY] = tuple(int(d) for d in example_input.shape[1:])
    return gm
