"""Errors raised by n2n_fx. Each message is one line: what was wrong and what to do."""

__all__ = [
    "N2NError",
    "TraceError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "RunDirError",
    "RepairError",
    "DiskError",
]


class N2NError(Exception):
    """Base class of every error n2n_fx raises on purpose."""


class TraceError(N2NError):
    """The model could not be symbolically traced by torch.fx."""


class ConfigError(N2NError, ValueError):
    """A configuration value, action or constraint is invalid."""


class DataError(N2NError):
    """A data set is missing, unreadable or inconsistent."""


class CheckpointError(N2NError):
    """A checkpoint is corrupt, of another format, or does not match the model."""


class RunDirError(N2NError):
    """A folder given as a run directory is not one."""


class RepairError(N2NError):
    """Surgery cannot make the student's shapes fit (an op rejects its new input, a module
    with weights has no rebuild handler): the rewrite gives a degenerate student. Every
    other exception raised during a rewrite is a bug and propagates."""


class DiskError(N2NError):
    """A file could not be written (permission denied, full disk); files written before are intact."""


def first_line(e: BaseException, *, with_type: bool = False, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when the message is empty), for
    one-line errors and degenerate reasons; ``with_type`` prefixes the type's name.

    Example:
        >>> first_line(ValueError("bad shape\\nat node 3"))
        'bad shape'
        >>> first_line(KeyError(), with_type=True)
        'KeyError'
    """
    text = str(e).strip()
    if not text:
        return type(e).__name__
    line = text.splitlines()[0][:limit]
    return f"{type(e).__name__}: {line}" if with_type else line
