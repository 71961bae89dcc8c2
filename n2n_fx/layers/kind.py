"""The layer-type vocabulary: a policy sees a layer's ``Kind`` as a one-hot code."""

from __future__ import annotations

import enum

__all__ = ["Kind", "KINDS", "PASSIVE_KINDS"]


class Kind(str, enum.Enum):
    """The layer type vocabulary, fixed across teachers (its order is the type code).

    New kinds are appended, never inserted: a saved policy records the vocabulary it was
    trained on and loads onto a longer one (``n2n_fx.policy.checkpoint``).
    """

    OTHER = "other"
    CONV = "conv"
    CONV_DW = "conv_dw"  # depthwise conv: groups == in_channels
    CONV_GROUPED = "conv_grouped"  # 1 < groups < in_channels
    LINEAR = "linear"
    BATCHNORM = "batchnorm"
    NORM = "norm"  # LayerNorm, GroupNorm, InstanceNorm, LocalResponseNorm
    RELU = "relu"  # ReLU, ReLU6, LeakyReLU, PReLU
    ACTIVATION = "activation"  # smooth activations: GELU, SiLU, Hardswish, ELU, Tanh, Mish, ...
    GATE = "gate"  # sigmoid-like gates: Sigmoid, Hardsigmoid
    MAXPOOL = "maxpool"
    AVGPOOL = "avgpool"
    ADAPTIVEPOOL = "adaptivepool"
    DROPOUT = "dropout"
    ATTENTION = "attention"  # multi-head attention (nn.MultiheadAttention)

    @property
    def code(self) -> int:
        return list(Kind).index(self)

    @property
    def passive(self) -> bool:
        """Keeps its input's shape and costs (next to) nothing at inference: removing it saves no
        parameters or FLOPs worth a decision (a norm folds into the conv before it)."""
        return self in PASSIVE_KINDS


KINDS = list(Kind)
# norms, activations, gates and dropout: the removal search leaves them to the layers around them
# unless asked (SearchConfig.remove_passive); docs/usage.md says what deciding them cost the policy
PASSIVE_KINDS = frozenset({Kind.BATCHNORM, Kind.NORM, Kind.RELU, Kind.ACTIVATION, Kind.GATE, Kind.DROPOUT})
