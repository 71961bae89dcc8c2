"""What a run tells its user as it goes: lines on the ``n2n_fx`` logger, and progress bars.

Every module logs to ``logging.getLogger(__name__)``: INFO for the progress lines a user
reads (data, teacher, each iteration's rewards), DEBUG for detail, WARNING for what may be
wrong (a weak teacher). The library is quiet by default: the package logger has only a
``NullHandler`` (``n2n_fx/__init__.py``). Three ways to see the lines:

* ``logging.basicConfig(level=logging.INFO)`` (or any handler of your own);
* ``console(level)``: a stderr handler for a block (the CLI's ``-q``/``-v``; ``compress(quiet=False)``);
* ``log_file(path)``: a file gets the INFO lines of a block, whatever the console shows (a run's ``run.log``).

A progress bar (``progress_bar``) is drawn on stderr when stderr is a terminal and the package's
INFO lines are shown; ``ConsoleHandler`` writes above a bar, never through it.

Example:
    >>> import logging
    >>> with console(logging.ERROR):  # what ``n2n-fx -q`` shows: errors only, no bars
    ...     progress_bar(10, "students").disable
    True
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from .storage import writing

__all__ = [
    "PACKAGE",
    "ConsoleHandler",
    "KeptRecords",
    "capture",
    "console",
    "log_file",
    "progress_bar",
    "quieted",
    "shown_level",
    "verbosity",
]

PACKAGE = "n2n_fx"  # the package logger: every module's logger is a child of it
_package = logging.getLogger(PACKAGE)
_shown: list[int] = []  # while ``capture`` lowers the package logger: the level it showed before
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ConsoleHandler(logging.Handler):
    """Writes each line to the current ``sys.stderr`` with ``tqdm.write``: above an active bar.

    Lines below WARNING are the message alone (the text users read); others say their level
    (``warning: the teacher ...``)."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage() if record.exc_info is None else self.format(record)
        if record.levelno != logging.INFO:
            text = f"{record.levelname.lower()}: {text}"
        tqdm.write(text, file=sys.stderr)


class KeptRecords(logging.Handler):
    """Keeps the records it is given (to write them to a log file that does not exist yet)."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def shown_level() -> int:
    """The lowest level of the package's lines that the user's logging shows."""
    return _shown[-1] if _shown else _package.getEffectiveLevel()


def progress_bar(total: int, desc: str, initial: int = 0) -> tqdm:
    """A bar on stderr, drawn when stderr is a terminal and INFO lines are shown (``shown_level``).

    A hidden bar takes the same calls (``update``, ``close``, ``with``) and draws nothing."""
    hidden = shown_level() > logging.INFO or not sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, leave=False, disable=hidden)


@contextlib.contextmanager
def console(level: int = logging.INFO) -> Iterator[ConsoleHandler]:
    """Show the package's lines of ``level`` and above on stderr for the block (and bars at INFO or below).

    A level above INFO silences the progress lines and bars (``-q``: ERROR); the package logger is
    lowered to ``level`` for the block if it was above it, and restored afterwards."""
    handler = ConsoleHandler(level)
    before = _package.level
    _package.addHandler(handler)
    _package.setLevel(min(level, _package.getEffectiveLevel()))
    try:
        yield handler
    finally:
        _package.removeHandler(handler)
        _package.setLevel(before)


@contextlib.contextmanager
def quieted() -> Iterator[None]:
    """No INFO line or bar for the block, whatever the logging configuration (``quiet=True``)."""
    before = _package.level
    _package.setLevel(max(logging.WARNING, _package.getEffectiveLevel()))
    try:
        yield
    finally:
        _package.setLevel(before)


def verbosity(quiet: bool | None) -> contextlib.AbstractContextManager:
    """The ``quiet`` of the library's entry points: None logs as configured (silent by default),
    True shows no INFO line or bar, False shows them on stderr (``console``)."""
    if quiet is None:
        return contextlib.nullcontext()
    return quieted() if quiet else console(logging.INFO)


@contextlib.contextmanager
def capture(handler: logging.Handler) -> Iterator[logging.Handler]:
    """Give ``handler`` every package line of its level and above for the block; nothing else changes.

    When the package logger would drop such lines (the library's default, ``quiet``, ``-q``), it
    is lowered for the block, and the handlers that were there (its own and those it propagates
    to) are handed only the lines they were handed before (``_Before``), so nothing new shows."""
    shown = shown_level()
    lowered = _package.getEffectiveLevel() > handler.level
    if lowered:
        before = (_package.level, _package.propagate, list(_package.handlers))
        for h in before[2]:
            _package.removeHandler(h)
        _package.addHandler(_Before(shown, before[2], before[1]))
        _package.setLevel(handler.level)
        _package.propagate = False
    _shown.append(shown)
    _package.addHandler(handler)
    try:
        yield handler
    finally:
        _package.removeHandler(handler)
        _shown.pop()
        if lowered:
            for h in list(_package.handlers):
                _package.removeHandler(h)
            for h in before[2]:
                _package.addHandler(h)
            _package.setLevel(before[0])
            _package.propagate = before[1]


class _Before(logging.Handler):
    """While ``capture`` lowers the package logger: hands a line of at least the level shown before to
    the handlers the logger had and, as propagation does, to its ancestors' handlers."""

    def __init__(self, level: int, handlers: list[logging.Handler], propagate: bool) -> None:
        super().__init__(level)
        self.handlers = handlers
        self.propagate = propagate

    def emit(self, record: logging.LogRecord) -> None:
        targets = list(self.handlers)
        logger = _package.parent if self.propagate else None
        while logger is not None:
            targets += logger.handlers
            logger = logger.parent if logger.propagate else None
        for h in targets:
            if record.levelno >= h.level:
                h.handle(record)


@contextlib.contextmanager
def log_file(path: Path, earlier: Sequence[logging.LogRecord] = (), level: int = logging.INFO) -> Iterator[Path]:
    """Append the package's lines of ``level`` and above to ``path`` for the block (``earlier`` first).

    The file gets them whatever the console shows (``capture``); a resumed run appends its session."""
    with writing(path):  # a read-only folder or a full disk: the one-line DiskError
        handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    try:
        for record in earlier:
            if record.levelno >= level:
                handler.handle(record)
        with capture(handler):
            yield path
    finally:
        handler.close()
