"""n2n_fx: compress neural networks by learned graph surgery (N2N learning on torch.fx).

Data flow: teacher -> graph -> features -> policy -> rewrite -> student -> distill -> reward -> report.

The library logs to the ``n2n_fx`` logger and is quiet by default (only a NullHandler);
``logging.basicConfig(level=logging.INFO)`` shows its progress lines (n2n_fx/progress.py).
"""

import logging

from .errors import CheckpointError, ConfigError, DataError, N2NError, RunDirError, TraceError
from .graph.cost import Cost, model_cost
from .graph.layers import Analysis, Layer, analyze, find_layers
from .rewrite import Diff, Rewrite, apply_actions, remove_layers, shrink
from .teacher.trace import trace
from .teacher.zoo import build_model

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())  # quiet unless the application configures logging

__all__ = [
    "Analysis",
    "CheckpointError",
    "ConfigError",
    "Cost",
    "DataError",
    "Diff",
    "Layer",
    "N2NError",
    "Rewrite",
    "RunDirError",
    "TraceError",
    "analyze",
    "apply_actions",
    "build_model",
    "find_layers",
    "model_cost",
    "remove_layers",
    "shrink",
    "trace",
]
