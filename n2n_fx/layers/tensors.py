"""Tensor helpers of the rebuild: gathers that inherit weights, modules made without ``__init__``.

Every student tensor is a gather of a teacher tensor (rows / columns selected by index,
-1 giving a fill value of 0 or 1): no arithmetic on inherited weights.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["gather", "gather2", "identity", "shell", "set_param", "set_buffer"]


def gather(t: torch.Tensor, idx: torch.Tensor, dim: int, fill: float = 0.0) -> torch.Tensor:
    """``t.index_select(dim, idx)`` where idx == -1 (or out of range) gives ``fill``."""
    idx = idx.to(torch.long)
    bad = (idx < 0) | (idx >= t.shape[dim])
    if not bool(bad.any()):
        return t.index_select(dim, idx)
    shape = list(t.shape)
    shape[dim] = 1
    padded = torch.cat([t, torch.full(shape, fill, dtype=t.dtype)], dim)
    return padded.index_select(dim, torch.where(bad, torch.full_like(idx, t.shape[dim]), idx))


def identity(idx: torch.Tensor, n: int) -> bool:
    """Is ``idx`` exactly ``0, 1, ..., n-1``?"""
    return idx.numel() == n and bool((idx == torch.arange(n)).all())


def gather2(t: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``t[rows][:, cols]`` in one gather (identity sides skipped); -1 entries give zeros."""
    if bool(((rows < 0) | (rows >= t.shape[0])).any()) or bool(((cols < 0) | (cols >= t.shape[1])).any()):
        return gather(gather(t, rows, 0), cols, 1)
    if identity(rows, t.shape[0]):
        return t if identity(cols, t.shape[1]) else t.index_select(1, cols)
    if identity(cols, t.shape[1]):
        return t.index_select(0, rows)
    return t[rows[:, None], cols[None, :]]


def shell(m: nn.Module) -> nn.Module:
    """A copy of ``m`` that shares nothing with it and holds none of its tensors yet.

    Made without running ``__init__`` (that allocates and initialises weights the caller
    replaces anyway): the instance dict is copied, its per-module dicts (parameters,
    buffers, submodules, hooks) are copied too, and the tensor entries are emptied. The
    caller sets every parameter and buffer of the new module (``set_param``, ``set_buffer``).
    """
    new = m.__class__.__new__(m.__class__)
    state = {k: (v.copy() if isinstance(v, dict) else v) for k, v in m.__dict__.items()}
    state["_parameters"] = dict.fromkeys(m._parameters)
    state["_buffers"] = dict.fromkeys(m._buffers)
    new.__dict__ = state
    return new


def _owned(value: torch.Tensor) -> torch.Tensor:
    """``value``, or a contiguous copy when it is a view (it may share the teacher's storage)."""
    if value._base is not None or not value.is_contiguous():
        return value.clone(memory_format=torch.contiguous_format)
    return value


def set_buffer(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Give ``module`` its real buffer ``name``."""
    module._buffers[name] = _owned(value)


def set_param(module: nn.Module, name: str, value: torch.Tensor, requires_grad: bool = True) -> None:
    """Give ``module`` its real parameter ``name`` (no allocation besides ``value`` itself)."""
    setattr(module, name, nn.Parameter(_owned(value), requires_grad=requires_grad))
