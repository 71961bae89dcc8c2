"""Moved to ``n2n_fx.rundir`` (the report reads run directories and may not import the search).

Kept only for ``search/search.py`` and ``cli/report_cmd.py``, which still import it from here;
delete this module once they import ``n2n_fx.rundir``.
"""

from ..rundir import RunDir, safe_torch_load

__all__ = ["RunDir", "safe_torch_load"]
