"""Command-line flags generated from a config dataclass: one flag per field, its source comment as help.

A field ``reward_lr: float | None = None  # Adam lr of ...`` becomes ``--reward-lr X`` in the
argument group of the ``# -- section --`` header it sits under, with the comments on and just
above its line as help. ``Literal[...]`` fields take ``choices``, ``bool`` fields ``--x/--no-x``,
``X | None`` fields also the word ``none``, ``dict`` fields repeatable ``KEY=VALUE`` items,
``list``/``tuple`` fields one or more values. A field added to the dataclass gets its flag with
no edit here.

Example:
    >>> from n2n_fx.search import SearchConfig
    >>> p = argparse.ArgumentParser()
    >>> add_config_args(p, SearchConfig)
    >>> given_config(p.parse_args(["--stage", "removal", "--reward-lr", "none"]), SearchConfig)
    {'stage': 'removal', 'reward_lr': None}
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from .common import parse_data_options

__all__ = ["FieldDoc", "field_docs", "flag_of", "add_config_args", "given_config"]

_SECTION = re.compile(r"#\s*--\s*(.*?)\s*-*\s*$")  # "# -- search (paper Algorithm 1) -------"


_READ: dict[Any, Callable[[str], Any]] = {int: int, float: float}  # how a field's text is read (else: as text)


@dataclass(frozen=True)
class FieldDoc:
    """What the source of a config dataclass says about one field."""

    section: str  # the "# -- name ---" header above the field ("" before any header)
    help: str  # the comment lines just above the field, then its inline comment, joined


def field_docs(cls: type) -> dict[str, FieldDoc]:
    """Field name -> its section and comment, read from the source of the dataclass ``cls``
    (a field declared in a base class: from the base's source).

    Without source (a frozen binary) a field gets an empty help and section."""
    docs: dict[str, FieldDoc] = {}
    for klass in reversed(cls.__mro__):  # a subclass's declaration wins
        if dataclasses.is_dataclass(klass):
            docs.update(_class_docs(klass))
    return {f.name: docs.get(f.name, FieldDoc("", "")) for f in dataclasses.fields(cls)}


def _class_docs(cls: type) -> dict[str, FieldDoc]:
    """The docs of the fields the class body of ``cls`` itself declares."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}  # line -> comment text
    alone: set[int] = set()  # lines holding nothing but a comment
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string
            if not tok.line[: tok.start[1]].strip():
                alone.add(tok.start[0])
    body = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)).body
    docs = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        line = node.lineno - 1
        while line in alone and not _SECTION.match(comments[line]):
            above.insert(0, comments[line])
            line -= 1
        inline = [comments[i] for i in range(node.lineno, (node.end_lineno or node.lineno) + 1) if i in comments]
        headers = [_SECTION.match(comments[i]) for i in sorted(alone) if i < node.lineno]
        section = next((m.group(1) for m in reversed(headers) if m), "")
        docs[node.target.id] = FieldDoc(section, " ".join(c.lstrip("#").strip() for c in above + inline))
    return docs


def flag_of(name: str) -> str:
    """The flag of field ``name``: ``reward_lr`` -> ``--reward-lr``."""
    return "--" + name.replace("_", "-")


def add_config_args(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    types_: dict[str, Callable[[str], Any]] | None = None,
    aliases: dict[str, list[str]] | None = None,
    only: Collection[str] | None = None,
) -> None:
    """Add one flag per field of ``cls`` (``only``: of these fields) to ``parser``, in an argument
    group per section.

    ``types_`` overrides how a field's text is read (e.g. ``20K`` for a parameter count);
    ``aliases`` adds more option strings to a field's flag. Flags nobody gives stay out of
    the namespace (``given_config`` returns the given ones)."""
    types_, aliases = types_ or {}, aliases or {}
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        doc = docs[f.name]
        if doc.section not in groups:
            groups[doc.section] = parser.add_argument_group(doc.section) if doc.section else parser
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        default = None if default is dataclasses.MISSING else default
        text = f"{doc.help} (default: {'none' if default is None else default})".replace("%", "%%")
        kwargs = _argument(f.name, hints[f.name], types_.get(f.name))
        groups[doc.section].add_argument(
            flag_of(f.name), *aliases.get(f.name, ()), dest=f.name, default=argparse.SUPPRESS, help=text, **kwargs
        )


def given_config(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` given as flags, as config values (``KEY=VALUE`` items made a dict)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name):
            value, kind = getattr(args, f.name), _base(hints[f.name])[1]
            out[f.name] = parse_data_options(value) if kind is dict else tuple(value) if kind is tuple else value
    return out


def _base(typ: Any) -> tuple[Any, Any, bool]:
    """``X | None`` -> (X, X's origin type, True); ``X`` -> (X, origin, False)."""
    options = typing.get_args(typ) if typing.get_origin(typ) in (typing.Union, types.UnionType) else (typ,)
    base = next(o for o in options if o is not type(None))
    return base, typing.get_origin(base) or base, type(None) in options


def _argument(name: str, typ: Any, override: Callable[[str], Any] | None) -> dict[str, Any]:
    """argparse keywords for the field ``name`` annotated ``typ``."""
    base, origin, optional = _base(typ)
    if origin is typing.Literal:
        choices = typing.get_args(base)
        return {"type": _or_none(type(choices[0]), optional), "choices": [*choices, *([None] if optional else [])]}
    if origin is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is dict:
        return {"action": "append", "metavar": "KEY=VALUE"}
    if origin in (list, tuple):  # --x A B C
        item = next(iter(typing.get_args(base)), str)
        return {"nargs": "+", "type": _named(override or _READ.get(item, str)), "metavar": item.__name__.upper()}
    read = override or _READ.get(origin, str)
    metavar = name.upper() if origin is str else origin.__name__.upper()  # --model MODEL, --seed INT
    return {"type": _or_none(read, optional), "metavar": metavar + ("|none" if optional else "")}


def _or_none(read: Callable[[str], Any], optional: bool) -> Callable[[str], Any]:
    """``read``, taking the word ``none`` for None when the field is optional."""
    if not optional:
        return _named(read)

    def parse(text: str) -> Any:
        return None if text.strip().lower() in ("none", "null") else _named(read)(text)

    parse.__name__ = getattr(read, "__name__", "value")
    return parse


def _named(read: Callable[[str], Any]) -> Callable[[str], Any]:
    """``read`` raising argparse's one-line error ("invalid int value: 'x'") on bad text."""
    if read in (int, float):

        def parse(text: str) -> Any:
            try:
                return read(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{text!r} is not {'an integer' if read is int else 'a number'}"
                ) from None

        return parse
    return read
