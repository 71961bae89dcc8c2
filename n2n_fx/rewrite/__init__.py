"""Graph surgery: actions -> plan -> rebuild walk -> student GraphModule + diff."""

from .degenerate import Degenerate, Reason
from .diff import Diff, compare, to_dot
from .handlers import RebuildContext, Rebuilt, register_handler
from .importance import keep_indices, l1_importance
from .plan import Plan, make_plan
from .rewrite import Rewrite, apply_actions, apply_plan, remove_layers, shrink

__all__ = [
    "Degenerate",
    "Diff",
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
    "register_handler",
    "remove_layers",
    "shrink",
    "to_dot",
]
