"""Reports of a run: the paper's Table 1 layout, a per-layer table, learning curves and the Pareto report."""

from .pareto import pareto_front, write_pareto
from .report import heavier_lines, layer_table, learning, summary_rows, write_report

__all__ = ["heavier_lines", "layer_table", "learning", "pareto_front", "summary_rows", "write_pareto", "write_report"]
