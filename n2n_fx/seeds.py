"""Seeds derived from a run's seed: one independent stream per purpose (numpy ``SeedSequence``).

A run has one seed; the policy's initial weights, each learner's sampling, each student's
training and each pruning step need their own. ``derive_seed(seed, *keys)`` hashes the run's
seed together with a path of keys (a purpose name, a stage, a step, a rollout) through
``numpy.random.SeedSequence``, so streams neither collide (``seed + step`` would give run 0's
step 1 to run 1's step 0) nor correlate, and the same seed and keys give the same seed in
every process and Python version (names are keyed by CRC-32, not by ``hash``).

Example:
    >>> derive_seed(0, "policy_init", "removal") == derive_seed(0, "policy_init", "removal")
    True
    >>> derive_seed(0, "student", 1, 0) != derive_seed(1, "student", 0, 0)
    True
    >>> 0 <= derive_seed(2**32, "x") < 2**63
    True
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["derive_seed"]


def _key(part: int | str) -> int:
    if isinstance(part, str):
        return zlib.crc32(part.encode())
    if isinstance(part, (int, np.integer)) and not isinstance(part, bool) and part >= 0:
        return int(part)
    raise ValueError(f"a seed key is a name or a non-negative int, got {part!r}")


def derive_seed(seed: int, *keys: int | str) -> int:
    """The seed (0 <= s < 2**63, for ``torch.manual_seed``, generators, loaders) of the stream
    ``keys`` under the run's ``seed`` (a non-negative int)."""
    sequence = np.random.SeedSequence(_key(seed), spawn_key=tuple(_key(k) for k in keys))
    low, high = (int(w) for w in sequence.generate_state(2, np.uint32))
    return ((high << 32) | low) & (2**63 - 1)
