"""Graph surgery: actions -> plan -> rebuild walk -> student GraphModule + diff."""

from ..degenerate import Degenerate, Reason
from ..layers import LayerSpec, RebuildContext, Rebuilt, register_layer
from .diff import Diff, compare, to_dot
from .importance import keep_indices, l1_importance
from .plan import Plan, make_plan
from .rewrite import Rewrite, apply_actions, apply_plan, remove_layers, shrink

__all__ = [
    "Degenerate",
    "Diff",
    "LayerSpec",
    "Plan",
    "Reason",
    "RebuildContext",
    "Rebuilt",
    "Rewrite",
    "apply_actions",
    "apply_plan",
    "compare",
    "keep_indices",
    "l1_importance",
    "make_plan",
    "register_layer",
    "remove_layers",
    "shrink",
    "to_dot",
]
