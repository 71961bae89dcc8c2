"""Layer specs: what n2n_fx knows of each module type, in one registered class per type.

Importing this package registers the built-in specs (convs, linear, norms, PReLU,
activations, pools, dropout, multi-head attention, Swin's window attention).
"""

from . import attention, conv, elementwise, linear, norm, window_attention  # noqa: F401  (registers the specs)
from .attention import HeadAttention
from .conv import kernel_after
from .kind import KINDS, PASSIVE_KINDS, Kind
from .spec import (
    UNKNOWN_STATELESS,
    UNKNOWN_WEIGHTED,
    LayerSpec,
    RebuildContext,
    Rebuilt,
    register_layer,
    registered_specs,
    spec_for,
)
from .tensors import gather

__all__ = [
    "HeadAttention",
    "KINDS",
    "Kind",
    "LayerSpec",
    "PASSIVE_KINDS",
    "RebuildContext",
    "Rebuilt",
    "UNKNOWN_STATELESS",
    "UNKNOWN_WEIGHTED",
    "gather",
    "kernel_after",
    "register_layer",
    "registered_specs",
    "spec_for",
]
