"""Rewards keyed by a canonical hash of the student architecture, persistable to JSON.

Two students with the same architecture (graph structure, module types and
hyper-parameters, parameter and buffer shapes) share a key, whatever their weights, so
a search never trains the same architecture twice, and a run can resume from the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from ..errors import CheckpointError, ConfigError
from ..storage import atomic_write_text

__all__ = ["arch_hash", "arch_signature", "RewardCache", "CACHE_FORMAT"]

CACHE_FORMAT = "n2n_fx.reward_cache/1"  # "format" field of the JSON file


def _callable_name(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{name}" if module else name


def _canon(value: Any, index: dict[fx.Node, int]) -> str:
    """A stable text form of a node argument: nodes by position, callables by name."""
    if isinstance(value, fx.Node):
        return f"%{index[value]}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_canon(v, index) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_canon(v, index)}" for k, v in sorted(value.items(), key=str)) + "}"
    if isinstance(value, slice):
        return f"slice({_canon(value.start, index)}, {_canon(value.stop, index)}, {_canon(value.step, index)})"
    if isinstance(value, (torch.dtype, torch.device, torch.memory_format, torch.layout)):
        return str(value)
    if callable(value) and not isinstance(value, nn.Module):
        return _callable_name(value)
    return repr(value)


def arch_signature(model: nn.Module) -> str:
    """The canonical text the architecture hash is taken of (useful to diff two students).

    It lists the fx graph node by node (op, target, arguments with nodes by position) for
    a GraphModule, then every submodule's type and ``extra_repr`` and every parameter's
    and buffer's name, shape, dtype and trainability. Weights and train/eval mode are
    not part of it.
    """
    lines: list[str] = [f"root {type(model).__module__}.{type(model).__qualname__}"]
    if isinstance(model, fx.GraphModule):
        index: dict[fx.Node, int] = {}
        for i, node in enumerate(model.graph.nodes):
            index[node] = i
            target = _callable_name(node.target) if node.op == "call_function" else str(node.target)
            lines.append(f"node {node.op} {target} {_canon(node.args, index)} {_canon(node.kwargs, index)}")
    for name, mod in model.named_modules():
        if mod is model:
            continue
        lines.append(f"module {name} {type(mod).__module__}.{type(mod).__qualname__}({mod.extra_repr()})")
    for name, p in model.named_parameters():
        lines.append(f"param {name} {tuple(p.shape)} {p.dtype} {p.requires_grad}")
    for name, b in model.named_buffers():
        lines.append(f"buffer {name} {tuple(b.shape)} {b.dtype}")
    return "\n".join(lines)


def arch_hash(model: nn.Module) -> str:
    """A 20-hex-digit hash of ``arch_signature(model)``: equal for equal architectures.

    Example:
        >>> arch_hash(nn.Linear(3, 4)) == arch_hash(nn.Linear(3, 4))
        True
        >>> arch_hash(nn.Linear(3, 4)) == arch_hash(nn.Linear(3, 5))
        False
    """
    return hashlib.sha256(arch_signature(model).encode()).hexdigest()[:20]


class RewardCache:
    """Architecture hash -> reward entry (a JSON-able dict), optionally backed by a file.

    With ``path``, existing entries are loaded and every ``put`` rewrites the file
    atomically, so an interrupted search resumes without retraining. ``context``
    (e.g. teacher, data and training settings) is stored with the entries; opening a
    file made under another context raises ConfigError.

    Example:
        >>> cache = RewardCache()
        >>> cache.put("abc", {"reward": 0.5})
        >>> "abc" in cache, cache.get("abc")["reward"], len(cache)
        (True, 0.5, 1)
    """

    def __init__(self, path: str | Path | None = None, context: dict[str, Any] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.context: dict[str, Any] | None = None
        self._entries: dict[str, dict[str, Any]] = {}
        self.hits = 0  # lookups that found an entry
        self.misses = 0  # lookups that did not
        if self.path is not None and self.path.exists():
            self._load(self.path)
        if context is not None:
            self.bind(context)

    def bind(self, context: dict[str, Any]) -> None:
        """Attach ``context``; ConfigError if the cache already holds entries of another one."""
        context = json.loads(json.dumps(context))  # normalise (tuples -> lists)
        if self.context is not None and self.context != context:
            changed = sorted(k for k in set(self.context) | set(context) if self.context.get(k) != context.get(k))
            where = f" {self.path}" if self.path else ""
            raise ConfigError(
                f"reward cache{where} was made with other settings ({', '.join(changed)} differ); "
                "use a new cache file or the original settings"
            )
        self.context = context

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            if data.get("format") != CACHE_FORMAT or not isinstance(data.get("entries"), dict):
                raise ValueError("wrong format")
        except (OSError, ValueError, AttributeError) as e:
            raise CheckpointError(
                f"{path} is not a reward cache ({type(e).__name__}); delete it or give another path"
            ) from None
        self.context = data.get("context")
        self._entries = dict(data["entries"])

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry for ``key`` (a copy), or None; counts hits and misses."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        return dict(entry)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Store ``entry`` (must be JSON-able) under ``key``; rewrite the file if there is one."""
        self._entries[key] = json.loads(json.dumps(entry))
        if self.path is not None:
            self.save(self.path)

    def save(self, path: str | Path) -> None:
        """Write all entries to ``path`` as JSON (atomically: temp file, then rename)."""
        data = {"format": CACHE_FORMAT, "context": self.context, "entries": self._entries}
        atomic_write_text(Path(path), json.dumps(data, indent=1, sort_keys=True))

    def discard_where(self, predicate) -> int:
        """Drop the entries for which ``predicate(entry)`` holds (e.g. newer than a checkpoint)."""
        gone = [k for k, e in self._entries.items() if predicate(e)]
        for k in gone:
            del self._entries[k]
        if gone and self.path is not None:
            self.save(self.path)
        return len(gone)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
