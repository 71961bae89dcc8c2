"""Weight-sharing teacher (supernet): students evaluated with shared weights instead of their own training."""

from .shared import SharedArch, Supernet, SupernetError, actions_key, smallest_actions
from .train import SupernetConfig, SupernetResult, sample_actions, train_supernet

__all__ = [
    "SharedArch",
    "Supernet",
    "SupernetConfig",
    "SupernetError",
    "SupernetResult",
    "actions_key",
    "sample_actions",
    "smallest_actions",
    "train_supernet",
]
