"""Policies across vocabulary growth: move a saved policy's input weights onto today's kinds.

A policy row starts with a one-hot layer kind over ``Kind`` (``n2n_fx.features``), then a
fixed number of scalars. When a kind is added, every policy input gets one column wider.
A checkpoint stores the kind names it was trained on; loading it onto a longer vocabulary
moves each weight column to its kind's new position and gives each new kind zero weights,
so the loaded policy computes exactly what the saved one did on every layer it knew.
"""

from __future__ import annotations

import torch

from ..errors import CheckpointError
from ..features.features import N_SCALARS
from ..layers import KINDS

__all__ = ["current_vocabulary", "saved_vocabulary", "column_map", "widen_inputs"]


def current_vocabulary() -> list[str]:
    """Today's kind names, in type-code order."""
    return [k.value for k in KINDS]


# kinds of every policy saved before checkpoints stored their vocabulary (n2n_fx <= 88036c0)
_FIRST_VOCABULARY = 14


def saved_vocabulary(state: dict) -> list[str] | None:
    """The kinds a checkpoint's rows use; None for custom rows (not ``n2n_fx.features``).

    Checkpoints written before the vocabulary was stored used the first 14 kinds of today's
    list when their rows were n2n_fx features (kinds are only ever appended).
    """
    if "kinds" in state:
        return None if state["kinds"] is None else list(state["kinds"])
    dim = state.get("config", {}).get("feature_dim")
    return current_vocabulary()[:_FIRST_VOCABULARY] if dim == _FIRST_VOCABULARY + N_SCALARS else None


def column_map(old: list[str], new: list[str]) -> torch.Tensor:
    """New column of each old feature column (kind one-hots, then the scalars)."""
    missing = [k for k in old if k not in new]
    if missing:
        raise CheckpointError(
            f"the policy was trained on layer kinds this version does not have ({', '.join(missing)}); "
            "load it with the n2n_fx version that saved it"
        )
    kinds = [new.index(k) for k in old]
    scalars = [len(new) + j for j in range(N_SCALARS)]
    return torch.tensor(kinds + scalars)


def widen_inputs(
    state: dict[str, torch.Tensor], blocks: dict[str, int], cols: torch.Tensor, new_dim: int
) -> dict[str, torch.Tensor]:
    """``state`` with each feature block moved: ``blocks`` maps a weight name to the column
    where the policy's feature row starts in its input; new columns are zero."""
    out = dict(state)
    old_dim = cols.numel()
    for name, start in blocks.items():
        if name not in state:
            continue
        w = state[name]  # (out, in)
        grown = torch.zeros(w.shape[0], w.shape[1] - old_dim + new_dim, dtype=w.dtype)
        grown[:, :start] = w[:, :start]
        grown[:, start + cols] = w[:, start : start + old_dim]
        grown[:, start + new_dim :] = w[:, start + old_dim :]
        out[name] = grown
    return out
