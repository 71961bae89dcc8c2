"""Students as packets: their weights by name and a weightless pickle of the module (its rebuild spec).

A packet travels to a worker and back without pickling tensors twice; tied weights stay
tied (each referenced tensor is created once), non-persistent buffers travel too.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch
from torch import nn

__all__ = ["pack", "unpack"]


class _SpecPickler(pickle.Pickler):
    """Pickles a module with every parameter and buffer replaced by a reference to its name."""

    def __init__(self, file: io.BytesIO, refs: dict[int, tuple]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.refs = refs

    def persistent_id(self, obj: Any) -> tuple | None:
        return self.refs.get(id(obj)) if isinstance(obj, torch.Tensor) else None


class _SpecUnpickler(pickle.Unpickler):
    """Rebuilds the module, creating each referenced tensor once (tied weights stay tied)."""

    def __init__(self, file: io.BytesIO, weights: dict[str, torch.Tensor]) -> None:
        super().__init__(file)
        self.weights = weights
        self.made: dict[str, torch.Tensor] = {}

    def persistent_load(self, pid: tuple) -> torch.Tensor:
        kind, name = pid[0], pid[1]
        if name not in self.made:
            t = self.weights[name]
            self.made[name] = nn.Parameter(t, requires_grad=pid[2]) if kind == "param" else t
        return self.made[name]


def pack(student: nn.Module) -> tuple[bytes, dict[str, torch.Tensor]]:
    """(rebuild spec, weights): a pickle of ``student`` without tensors, and its tensors by name."""
    refs: dict[int, tuple] = {}
    weights: dict[str, torch.Tensor] = {}
    for name, p in student.named_parameters(remove_duplicate=False):
        if id(p) not in refs:
            refs[id(p)] = ("param", name, p.requires_grad)
            weights[name] = p.detach().cpu()
    for name, b in student.named_buffers(remove_duplicate=False):
        if id(b) not in refs:
            refs[id(b)] = ("buffer", name)
            weights[name] = b.detach().cpu()
    buf = io.BytesIO()
    _SpecPickler(buf, refs).dump(student)
    return buf.getvalue(), weights


def unpack(spec: bytes, weights: dict[str, torch.Tensor]) -> nn.Module:
    """The module ``pack`` described, with its weights."""
    return _SpecUnpickler(io.BytesIO(spec), weights).load()
