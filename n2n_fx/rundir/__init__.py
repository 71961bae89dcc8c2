"""The run directory: every file a run writes (atomically), its layout and its one-writer lock.

The search writes a run directory; the report renders one; the CLI and ``load_run`` read
one. It sits below all of them in the import order (it needs only ``errors`` and ``storage``).
"""

from .directory import (
    INPUT_FILES,
    LOG_FILE,
    RUN_FORMAT,
    SEARCH_OUTPUTS,
    PickledFileError,
    RunDir,
    safe_torch_load,
)
from .lock import LOCK_NAME, RunLock

__all__ = [
    "INPUT_FILES",
    "LOCK_NAME",
    "LOG_FILE",
    "RUN_FORMAT",
    "SEARCH_OUTPUTS",
    "PickledFileError",
    "RunDir",
    "RunLock",
    "safe_torch_load",
]
