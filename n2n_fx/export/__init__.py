"""Deploying a student: formats outside PyTorch (ONNX) and the graph passes they need."""

from .onnx import FixedAdaptiveAvgPool, export_onnx, fix_adaptive_pools

__all__ = ["FixedAdaptiveAvgPool", "export_onnx", "fix_adaptive_pools"]
