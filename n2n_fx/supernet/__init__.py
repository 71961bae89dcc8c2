"""Weight-sharing teacher (supernet): students evaluated with shared weights instead of their own training."""

from .shared import SharedArch, Supernet, SupernetError, actions_key, smallest_actions
from .train import SPACES, SupernetConfig, SupernetResult, sample_actions, sandwich, train_supernet

__all__ = [
    "SPACES",
    "SharedArch",
    "Supernet",
    "SupernetConfig",
    "SupernetError",
    "SupernetResult",
    "actions_key",
    "sample_actions",
    "sandwich",
    "smallest_actions",
    "train_supernet",
]
