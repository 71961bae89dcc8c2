"""Reports of a run: the paper's Table 1 layout, a per-layer table and learning curves."""

from .report import layer_table, summary_rows, write_report

__all__ = ["layer_table", "summary_rows", "write_report"]
