"""Check every field of a config dataclass against its annotated type and a range, in one line.

The checks come from the dataclass itself: each field's annotation gives its type (``int``,
``float``, ``str``, ``bool``, ``dict``, ``Literal[...]``: one of its values, ``X | None``), and
``RANGES`` gives the allowed values of numbers (``DEFAULT_RANGE`` for fields it does not name,
``LR_RANGE`` for ``*_lr``). A new field is thus checked as soon as it is declared. Values come
from TOML/JSON files, so ``"3"`` is not an int and ``1.5`` is not an int either; an int is a valid float (and stays an int:
``reward_subset`` tells a count from a fraction by it).

Example:
    >>> from n2n_fx.search import SearchConfig
    >>> SearchConfig(removal_iterations="3")  # SearchConfig.__post_init__ calls check_fields
    Traceback (most recent call last):
    ...
    n2n_fx.errors.ConfigError: removal_iterations must be an integer, not '3' (str)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["Range", "RANGES", "DEFAULT_RANGE", "LR_RANGE", "check_fields"]


@dataclass(frozen=True)
class Range:
    """Allowed numbers: ``low <= x`` (``low < x`` if ``open_low``) and ``x < high``; None: unbounded."""

    low: float | None = None  # smallest allowed value (None: no lower bound)
    high: float | None = None  # values must be strictly below this (None: no upper bound)
    open_low: bool = False  # True: ``low`` itself is not allowed

    def check(self, name: str, x: float) -> None:
        if self.low is not None and (x < self.low or (self.open_low and x == self.low)):
            raise ConfigError(f"{name}={x!r} must be {'>' if self.open_low else '>='} {self.low!r}")
        if self.high is not None and x >= self.high:
            raise ConfigError(f"{name}={x!r} must be < {self.high!r}")


DEFAULT_RANGE = Range(0)  # counts, sizes, limits and weights: not negative
# every field named *_lr: a learning rate > 0 and below where Adam's float32 arithmetic overflows
# (from about 3.4e37 torch raises inside the optimiser step instead of the loss diverging)
LR_RANGE = Range(0, 3e37, open_low=True)
# fields whose numbers differ from DEFAULT_RANGE / LR_RANGE
RANGES: dict[str, Range] = {
    "teacher_epochs": Range(1),
    "rollouts": Range(1),
    "final_candidates": Range(1),
    "batch_size": Range(1),
    "rollout_threads": Range(1),
    "shrink_keep_bias": Range(),  # a logit slope: any sign
    "baseline_decay": Range(0, 1),
    "remove_prior": Range(0, 1, open_low=True),
    "max_linear_growth": Range(0, open_low=True),
    "seed": Range(0, 2**32),
}


def check_fields(obj: Any, ranges: dict[str, Range] | None = None) -> None:
    """Raise ``ConfigError`` (one line, naming the field) for the first field of the dataclass
    ``obj`` whose value is not of its annotated type or out of its range."""
    ranges = RANGES if ranges is None else ranges
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        _typed(f.name, value, hints[f.name])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rng = ranges.get(f.name) or (LR_RANGE if f.name.endswith("_lr") else DEFAULT_RANGE)
            rng.check(f.name, value)


def _typed(name: str, value: Any, typ: Any) -> Any:
    """``value`` if it is a ``typ`` (an int is a float too), else a ConfigError."""
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        options = typing.get_args(typ)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return _typed(name, value, option)
                except ConfigError:
                    continue
        what = " or ".join(_describe(o) for o in options)
        raise ConfigError(f"{name} must be {what}, not {_shown(value)}")
    if typ is Any:
        return value
    if typing.get_origin(typ) is typing.Literal:
        choices = typing.get_args(typ)
        if not any(value == c and type(value) is type(c) for c in choices):
            raise ConfigError(f"unknown {name} {value!r}; use one of {', '.join(map(str, choices))}")
        return value
    origin = typing.get_origin(typ) or typ
    if origin is bool:
        ok = isinstance(value, bool)
    elif origin is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif origin is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)  # an int stays one (a count)
        if ok and not math.isfinite(value):
            raise ConfigError(f"{name}={value} must be a finite number")
    elif origin is dict:
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
    elif isinstance(origin, type):
        ok = isinstance(value, origin)
    else:  # an annotation this checker does not know: left to the field's own checks
        ok = True
    if not ok:
        raise ConfigError(f"{name} must be {_describe(typ)}, not {_shown(value)}")
    return value


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}


def _describe(typ: Any) -> str:
    if typ is type(None):
        return "unset (null)"
    if typing.get_origin(typ) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(typ)))
    origin = typing.get_origin(typ) or typ
    return _NAMES.get(origin, getattr(origin, "__name__", str(typ)))


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"
