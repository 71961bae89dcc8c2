"""Measure a model: trainable parameters, FLOPs, CPU latency and peak activation memory.

* FLOPs are per sample (batch 1) and FLOPs = 2 x MACs of convolutions, linears, matrix
  products and attention, counted by the one counter of ``n2n_fx.graph.cost`` (the
  convention of ``torch.utils.flop_counter.FlopCounterMode``) on meta tensors, so nothing
  is computed at real size.
* Peak activation memory is the largest total size of the tensors alive at once while an
  fx graph runs at batch 1: every node's output (placeholders included, parameters not)
  stays alive until its last user has run; views and in-place results share storage and
  count once. Temporaries inside a leaf module are not seen.
* Latency is the median wall time in milliseconds of repeated batch-1 forward passes in
  eval mode without gradients, after warm-up runs, on a given device (CPU by default; on
  CUDA every pass is synchronised).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.utils._pytree import tree_leaves

from ..errors import ConfigError, TraceError
from ..graph.cost import graph_flops

__all__ = [
    "Measurement",
    "count_params",
    "count_flops",
    "peak_activation_bytes",
    "latency_ms",
    "measure",
]


@dataclass(frozen=True)
class Measurement:
    """Measured quantities of one model (None: not measured)."""

    params: int  # trainable parameters
    flops: int  # FLOPs per sample (2 x MACs of convs, linears, matrix products, attention)
    latency_ms: float | None = None  # median batch-1 CPU forward time in milliseconds
    activation_bytes: int | None = None  # peak bytes of live activations at batch 1

    def as_dict(self) -> dict[str, float]:
        """Quantity name -> value, for the measured quantities only."""
        out = {"params": float(self.params), "flops": float(self.flops)}
        if self.latency_ms is not None:
            out["latency_ms"] = float(self.latency_ms)
        if self.activation_bytes is not None:
            out["activation_bytes"] = float(self.activation_bytes)
        return out


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (shared tensors counted once).

    Example:
        >>> count_params(nn.Linear(10, 5))
        55
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _example(example: torch.Tensor | Sequence[int], batch: int = 1) -> torch.Tensor:
    if isinstance(example, torch.Tensor):
        return example[:batch] if example.dim() > 0 and example.shape[0] > batch else example
    size = tuple(int(d) for d in example)
    if not size or any(d <= 0 for d in size):
        raise ConfigError(f"input size {size} must be positive like (3, 32, 32)")
    # values do not matter to a count or a timing; a private generator leaves the global RNG (and so a
    # seeded search's history) untouched
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))


def count_flops(model: nn.Module, example: torch.Tensor | Sequence[int]) -> int:
    """FLOPs (= 2 x MACs) of one sample through ``model``, by n2n_fx's one FLOP counter.

    Convolutions, linears, matrix products and attention are counted as
    ``torch.utils.flop_counter.FlopCounterMode`` counts them (see ``n2n_fx.graph.cost``), on
    meta tensors. ``example`` is an input tensor (its first sample is used) or an input size
    (C, H, W). A module that is not an ``fx.GraphModule`` is traced first (``torch.fx``).

    Example:
        >>> count_flops(nn.Conv2d(3, 8, 3, padding=1), (3, 4, 4))  # 2*3*3*3*8*4*4
        6912
    """
    x = _example(example, batch=1)
    if isinstance(model, fx.GraphModule):
        return graph_flops(model, x)
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # fx raises many kinds of errors; reported, not swallowed
        text = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise TraceError(
            f"cannot count the FLOPs of {type(model).__name__}: torch.fx cannot trace it ({text}); "
            "pass an fx.GraphModule (n2n_fx.trace)"
        ) from None
    return graph_flops(gm, x)  # a student that does not fit its input raises RuntimeError here


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


class _LivenessInterpreter(fx.Interpreter):
    """Runs a graph and tracks the bytes of live activation storages."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        nodes = list(gm.graph.nodes)
        self.position = {n: i for i, n in enumerate(nodes)}
        self.last_use: dict[fx.Node, int] = {}
        for i, n in enumerate(nodes):
            for inp in n.all_input_nodes:
                self.last_use[inp] = i
        self.node_storages: dict[fx.Node, list[int]] = {}
        self.refs: dict[int, list[int]] = {}  # storage pointer -> [bytes, live nodes using it]
        self.live = self.peak = 0

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n.op not in ("get_attr", "output"):
            ptrs = []
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    ptr = storage.data_ptr()
                    if ptr in ptrs:
                        continue
                    ptrs.append(ptr)
                    entry = self.refs.setdefault(ptr, [storage.nbytes(), 0])
                    if entry[1] == 0:
                        self.live += entry[0]
                    entry[1] += 1
            self.node_storages[n] = ptrs
        self.peak = max(self.peak, self.live)
        here = self.position[n]
        for inp in n.all_input_nodes:
            if self.last_use.get(inp) == here:
                self._release(inp)
        return out

    def _release(self, n: fx.Node) -> None:
        for ptr in self.node_storages.pop(n, []):
            entry = self.refs[ptr]
            entry[1] -= 1
            if entry[1] == 0:
                self.live -= entry[0]
                del self.refs[ptr]


def peak_activation_bytes(model: nn.Module, example: torch.Tensor | Sequence[int]) -> int:
    """Peak bytes of activations alive at once during a batch-1 forward (see module doc).

    ``model`` is traced with ``torch.fx.symbolic_trace`` unless it is a GraphModule.

    Example:
        >>> peak_activation_bytes(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), (4,))  # 8*4 + 8*4 at ReLU
        64
    """
    if isinstance(model, fx.GraphModule):
        gm = model
    else:
        try:
            gm = fx.symbolic_trace(model)
        except Exception as e:
            raise ConfigError(
                f"cannot trace {type(model).__name__} to measure activation memory ({type(e).__name__}); "
                "pass an fx.GraphModule (n2n_fx.teacher.trace)"
            ) from None
    x = _example(example, batch=1).to(_device_of(model))
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            interp = _LivenessInterpreter(gm)
            interp.run(x)
    finally:
        gm.train(was_training)
    return int(interp.peak)


def latency_ms(
    model: nn.Module,
    example: torch.Tensor | Sequence[int],
    *,
    repeats: int = 20,
    warmup: int = 3,
    batch: int = 1,
    device: str | torch.device = "cpu",
) -> float:
    """Median forward time in milliseconds on ``device`` (a copy is timed if the model is elsewhere).

    Example:
        >>> latency_ms(nn.Linear(4, 4), (4,), repeats=3) > 0
        True
    """
    if repeats <= 0 or warmup < 0:
        raise ConfigError("latency repeats must be positive and warmup >= 0")
    dev = torch.device(device)
    here = _device_of(model)
    if here.type != dev.type or (dev.index is not None and here.index != dev.index):
        model = copy.deepcopy(model).to(dev)
    with torch.random.fork_rng(devices=[]):  # timing a model leaves the caller's random stream as it was
        x = _example(example, batch=batch).to(dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                model(x)
                sync()
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return statistics.median(times) * 1000.0


def measure(
    model: nn.Module,
    example: torch.Tensor | Sequence[int],
    *,
    latency: bool = False,
    activation: bool = False,
    latency_repeats: int = 20,
) -> Measurement:
    """Parameters and FLOPs always; latency and peak activation memory when asked.

    Example:
        >>> m = measure(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), (3, 2, 2), activation=True)
        >>> m.params, m.flops, m.activation_bytes  # input 48 B (flatten is a view) + output 8 B
        (26, 48, 56)
    """
    return Measurement(
        params=count_params(model),
        flops=count_flops(model, example),
        latency_ms=latency_ms(model, example, repeats=latency_repeats) if latency else None,
        activation_bytes=peak_activation_bytes(model, example) if activation else None,
    )
