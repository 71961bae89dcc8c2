"""Save and load policies as plain data (config dict + state_dict), never as pickled objects."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from ..features.features import FEATURE_DIM, N_SCALARS
from ..storage import atomic_torch_save
from .registry import DEFAULT_POLICIES, Policy, policy_class, policy_name
from .vocabulary import column_map, current_vocabulary, saved_scalars, saved_vocabulary, widen_inputs

__all__ = ["POLICY_FORMAT", "Policy", "save_policy", "load_policy", "policy_spec", "build_policy"]

POLICY_FORMAT = "n2n_fx.policy/1"  # "format" key of a saved policy file


def policy_spec(policy: Policy) -> dict[str, Any]:
    """``{"kind": ..., "config": {...}}`` describing how to rebuild ``policy`` (plain types), with
    ``"policy": name`` when it is not its kind's default (``policy.registry``; the paper's LSTMs)."""
    name = policy_name(policy)  # raises ConfigError for an unregistered class
    spec = {"kind": policy.kind, "config": dataclasses.asdict(policy.config)}
    return spec if name == DEFAULT_POLICIES[policy.kind] else {**spec, "policy": name}


def build_policy(spec: dict[str, Any]) -> Policy:
    """A fresh policy from a ``policy_spec`` dict (raises CheckpointError if it is not one)."""
    try:
        kind = spec["kind"]
        name = spec.get("policy", DEFAULT_POLICIES[kind])
        config = dict(spec["config"])
    except (KeyError, TypeError, AttributeError):
        raise CheckpointError(
            f"policy spec {spec!r:.80} names no known policy kind; expected one of {sorted(DEFAULT_POLICIES)}"
        ) from None
    try:
        cls = policy_class(kind, name)
    except ConfigError as err:
        raise CheckpointError(f"saved policy: {err} (register it before loading)") from None
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}  # JSON-like lists: tuples
    try:
        return cls(cls.config_class(**config))
    except (TypeError, ConfigError) as err:
        raise CheckpointError(f"saved {kind} policy config is invalid ({err}); re-save it") from None


def save_policy(policy: Policy, path: str | os.PathLike) -> None:
    """Write ``policy`` to ``path`` as {format, kind, config, kinds, scalars, state_dict}.

    ``kinds`` is the layer-kind vocabulary its feature rows use (None for custom rows), ``scalars``
    the number of feature scalars after the kinds.

    Example::

        save_policy(policy, "runs/x/removal.pt"); same = load_policy("runs/x/removal.pt")
    """
    kinds = current_vocabulary() if policy.config.feature_dim == FEATURE_DIM else None  # None: custom rows
    state = {
        "format": POLICY_FORMAT,
        **policy_spec(policy),
        "kinds": kinds,
        "scalars": N_SCALARS,
        "state_dict": policy.state_dict(),
    }
    atomic_torch_save(state, path)  # a kill mid-write leaves the previous file


def load_policy(path: str | os.PathLike) -> Policy:
    """Rebuild a policy written by ``save_policy`` (``torch.load(weights_only=True)``).

    A policy saved with fewer layer kinds or feature scalars than this version has loads onto
    today's features: its input weights move to their columns and new columns get zero weights,
    so it acts as it did on every layer kind it knew (``n2n_fx.policy.vocabulary``).

    Raises ``CheckpointError`` when the file is missing, corrupt, of another format, or its
    weights do not match its config.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no policy file at {path}; check the path or save one with save_policy")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means a bad file
        raise CheckpointError(
            f"{path} is not a readable policy file ({type(err).__name__}); re-save it with save_policy"
        ) from None
    if not isinstance(state, dict) or state.get("format") != POLICY_FORMAT:
        raise CheckpointError(f"{path} is not a {POLICY_FORMAT} file; save it with save_policy")
    state, weights = _onto_current_vocabulary(state)
    policy = build_policy(state)
    try:
        policy.load_state_dict(weights)
    except (KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0][:120]
        raise CheckpointError(f"{path}: weights do not match the saved config ({first}); re-save it") from None
    return policy


def _onto_current_vocabulary(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The saved spec and weights, widened when the policy knew fewer kinds or scalars than today."""
    weights = state.get("state_dict")
    config = state.get("config")
    if not isinstance(weights, dict) or not isinstance(config, dict) or not isinstance(config.get("feature_dim"), int):
        return state, weights  # build_policy / load_state_dict say what is wrong
    old = saved_vocabulary(state)
    new = current_vocabulary()
    scalars = saved_scalars(state)
    if old is None or (old == new and scalars == N_SCALARS):
        return state, weights
    cols = column_map(old, new, scalars)
    if cols.numel() != config["feature_dim"]:
        raise CheckpointError(
            f"policy rows have {config['feature_dim']} features but {len(old)} saved kinds and {scalars} "
            "scalars; re-save it"
        )
    if state.get("kind") not in DEFAULT_POLICIES:
        return state, weights  # build_policy says what is wrong
    grown = {**state, "config": {**config, "feature_dim": FEATURE_DIM}}
    policy = build_policy(grown)
    blocks = policy.feature_blocks() if hasattr(policy, "feature_blocks") else {}  # no weights read x: nothing to move
    return grown, widen_inputs(weights, blocks, cols, FEATURE_DIM)
