"""The main job: two-stage N2N search over a run directory (paper Algorithm 1)."""

from ..rundir import RunDir
from .api import CompressionResult, compress, load_run, run_compress
from .config import STAGES, SearchConfig, load_config_file
from .search import Search, rebuild_student

__all__ = [
    "STAGES",
    "CompressionResult",
    "RunDir",
    "Search",
    "SearchConfig",
    "compress",
    "load_config_file",
    "load_run",
    "rebuild_student",
    "run_compress",
]
