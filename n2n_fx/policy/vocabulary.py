"""Policies across vocabulary growth: move a saved policy's input weights onto today's columns.

A policy row starts with a one-hot layer kind over ``Kind`` (``n2n_fx.features``), then
``N_SCALARS`` scalars. When a kind or a scalar is added, every policy input gets one column
wider (kinds and scalars are only ever appended). A checkpoint stores the kind names and the
number of scalars it was trained on; loading it onto today's rows moves each weight column to
its new position and gives each new column zero weights, so the loaded policy computes exactly
what the saved one did on every layer it knew.
"""

from __future__ import annotations

import torch

from ..errors import CheckpointError
from ..features.features import N_SCALARS
from ..layers import KINDS

__all__ = ["current_vocabulary", "saved_vocabulary", "saved_scalars", "column_map", "widen_inputs"]


def current_vocabulary() -> list[str]:
    """Today's kind names, in type-code order."""
    return [k.value for k in KINDS]


# kinds of every policy saved before checkpoints stored their vocabulary (n2n_fx <= 88036c0)
_FIRST_VOCABULARY = 14
# scalars of every policy saved before checkpoints stored their count (before the cost shares)
_FIRST_SCALARS = 8


def saved_vocabulary(state: dict) -> list[str] | None:
    """The kinds a checkpoint's rows use; None for custom rows (not ``n2n_fx.features``).

    Checkpoints written before the vocabulary was stored used the first 14 kinds of today's
    list when their rows were n2n_fx features (kinds are only ever appended).
    """
    if "kinds" in state:
        return None if state["kinds"] is None else list(state["kinds"])
    dim = state.get("config", {}).get("feature_dim")
    return current_vocabulary()[:_FIRST_VOCABULARY] if dim == _FIRST_VOCABULARY + _FIRST_SCALARS else None


def saved_scalars(state: dict) -> int:
    """How many scalars follow the kind one-hots in a checkpoint's rows."""
    return int(state.get("scalars", _FIRST_SCALARS))


def column_map(old: list[str], new: list[str], old_scalars: int = N_SCALARS) -> torch.Tensor:
    """New column of each old feature column (kind one-hots, then the scalars)."""
    missing = [k for k in old if k not in new]
    if missing:
        raise CheckpointError(
            f"the policy was trained on layer kinds this version does not have ({', '.join(missing)}); "
            "load it with the n2n_fx version that saved it"
        )
    kinds = [new.index(k) for k in old]
    if old_scalars > N_SCALARS:
        raise CheckpointError(
            f"the policy was trained on {old_scalars} feature scalars, this version has {N_SCALARS}; "
            "load it with the n2n_fx version that saved it"
        )
    scalars = [len(new) + j for j in range(old_scalars)]
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
