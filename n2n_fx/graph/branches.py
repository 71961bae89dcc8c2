"""Residual branches a single layer can remove: ``x + f(x)`` becomes ``x``.

Inside a transformer block the last layer of a branch (attention, the MLP's output Linear)
writes the residual stream, whose size is fixed; bypassing it like other layers would
change that size. Removing it instead removes the whole branch: its output is replaced by
nothing, the ops between it and the residual add are zero-preserving (dropout, stochastic
depth, layer-scale multiplies, reshapes) or a norm of the branch's output (Swin v2's
post-norm), and the add passes the stream on unchanged. The
layers that fed only that branch become dead code and leave the student.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx

from ..layers import Kind, spec_for
from .kinds import module_at
from .shapes import META_KEY

__all__ = ["residual_join", "zero_preserving", "in_branch", "is_residual_add"]

_ADD = {operator.add, operator.iadd, torch.add}
_SHAPE_METHODS = {"permute", "transpose", "contiguous", "reshape", "view", "flatten", "squeeze", "unsqueeze"}
_SHAPE_FUNCTIONS = {torch.permute, torch.transpose, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_ZERO_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d}
_MUL = {operator.mul, operator.imul, torch.mul}


def is_residual_add(node: fx.Node) -> bool:
    """An addition of two tensors (``x + branch``)."""
    if node.op == "call_function" and node.target in _ADD or node.op == "call_method" and node.target == "add":
        return sum(isinstance(a, fx.Node) for a in node.args[:2]) == 2
    return False


def zero_preserving(gm: fx.GraphModule, node: fx.Node, source: fx.Node) -> bool:
    """Is ``node``'s output zero whenever its input ``source`` is zero (and nothing else changes)?"""
    if node.op == "call_module":
        mod = module_at(gm, node.target)
        return spec_for(mod).layer_kind(mod) is Kind.DROPOUT or type(mod).__name__ == "Identity"
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS and node.args[0] is source
    if node.op != "call_function":
        return False
    if node.target is operator.getitem:  # attention's (output, weights)[0]
        return node.args[0] is source and node.args[1] == 0
    if node.target in _SHAPE_FUNCTIONS or node.target in _ZERO_FUNCTIONS:
        return node.args[0] is source
    if getattr(node.target, "__name__", "") == "stochastic_depth":  # torchvision.ops, fx-wrapped
        return node.args[0] is source
    if node.target in _MUL:  # layer scale: the branch times a parameter or a constant
        others = [a for a in node.args if a is not source]
        return len(others) == 1 and (not isinstance(others[0], fx.Node) or others[0].op == "get_attr")
    return False


def in_branch(gm: fx.GraphModule, node: fx.Node, source: fx.Node) -> bool:
    """Does ``node`` leave the student with the branch whose output ``source`` is?

    Zero-preserving ops, and a norm applied to the branch's output before the add (Swin v2's
    post-norm ``x + norm(attn(x))``): a removed branch contributes nothing to the sum, so
    the norm of its output goes with it.
    """
    if zero_preserving(gm, node, source):
        return True
    if node.op != "call_module" or node.args[:1] != (source,):
        return False
    mod = module_at(gm, node.target)
    return spec_for(mod).layer_kind(mod) in (Kind.NORM, Kind.BATCHNORM)


def residual_join(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """The residual add that only ``node``'s branch feeds through zero-preserving ops, or None."""
    cur = node
    for _ in range(16):
        users = [u for u in cur.users if u.users]  # unused reads (attention's weights) do not count
        if len(users) != 1:
            return None
        u = users[0]
        if is_residual_add(u):
            other = [a for a in u.args[:2] if a is not cur]
            if len(other) != 1 or _shape(other[0]) is None or _shape(other[0]) != _shape(u):
                return None  # the stream alone must have the sum's shape
            return u.name

        if not in_branch(gm, u, cur):
            return None
        cur = u
    return None


def _shape(node: fx.Node) -> tuple | None:
    val = node.meta.get(META_KEY)
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None
