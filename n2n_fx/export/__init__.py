"""Deploying a student: a torch.export program (.pt2, the default), ONNX, or fx code, batch size dynamic."""

from .formats import EXPORT_FORMATS, check_format, default_name, export_student
from .onnx import FixedAdaptiveAvgPool, export_onnx, fix_adaptive_pools, onnx_bytes
from .program import BATCH, export_program, program_bytes

__all__ = [
    "BATCH",
    "EXPORT_FORMATS",
    "FixedAdaptiveAvgPool",
    "check_format",
    "default_name",
    "export_onnx",
    "export_program",
    "export_student",
    "fix_adaptive_pools",
    "onnx_bytes",
    "program_bytes",
]
