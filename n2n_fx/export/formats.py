"""Writing a student in a deployment format: ``pt2`` (torch.export, the default), ``onnx``, ``fx``.

* ``pt2``: a ``torch.export`` program (``program.py``), batch size dynamic; load it with
  ``torch.export.load(path).module()``.
* ``onnx``: an ONNX model (``onnx.py``; the ``onnx`` extra), batch size dynamic.
* ``fx``: a folder (``GraphModule.to_folder``): ``module.py``, the student's generated code,
  and its weights; import it as a package.

Every file goes through ``n2n_fx.storage`` (written whole or not at all).

Example:
    >>> import tempfile
    >>> from torch import nn
    >>> from n2n_fx.teacher.trace import trace
    >>> student = trace(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), input_size=(1, 4, 4))
    >>> out = export_student(student, Path(tempfile.mkdtemp()) / "student.pt2")
    >>> torch.export.load(out).module()(torch.randn(3, 1, 4, 4)).shape
    torch.Size([3, 3])
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import fx, nn

from ..errors import ConfigError
from ..storage import atomic_write_bytes
from ..teacher.trace import example_input_of
from .onnx import onnx_bytes
from .program import program_bytes

__all__ = ["EXPORT_FORMATS", "check_format", "default_name", "export_student"]

# format -> the output's name in a run directory
EXPORT_FORMATS = {"pt2": "student.pt2", "onnx": "student.onnx", "fx": "student_fx"}
_REMOVED = {
    "torchscript": "TorchScript export was removed (torch.jit.trace is deprecated); use pt2 (torch.export) or onnx"
}


def check_format(name: str) -> str:
    """``name`` if it is an export format, else ConfigError naming the formats (one line)."""
    if name in _REMOVED:
        raise ConfigError(_REMOVED[name])
    if name not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {name!r}; use one of {', '.join(EXPORT_FORMATS)}")
    return name


def default_name(format: str) -> str:
    """The file (``fx``: folder) name ``format`` is written to in a run directory."""
    return EXPORT_FORMATS[check_format(format)]


def export_student(
    student: nn.Module,
    path: str | Path,
    format: str = "pt2",
    example_input: torch.Tensor | None = None,
) -> Path:
    """Write ``student`` to ``path`` in ``format`` (``pt2``, ``onnx`` or ``fx``) and return ``path``.

    ``example_input`` (batch, *input size) gives the input size; without it, a GraphModule
    traced by ``n2n_fx.trace`` gives its own. ``pt2`` and ``onnx`` export the student in eval
    mode with a dynamic batch size; the student's own mode is left as it was."""
    check_format(format)
    path = Path(path)
    if format == "fx":
        if not isinstance(student, fx.GraphModule):
            raise ConfigError(f"fx export needs a GraphModule (got {type(student).__name__}); trace it first")
        _write_folder(student, path)
        return path
    if example_input is None:
        if not isinstance(student, fx.GraphModule):
            raise ConfigError("pass example_input: only a GraphModule traced by n2n_fx.trace knows its input size")
        example_input = example_input_of(student, batch=2)
    data = program_bytes(student, example_input) if format == "pt2" else onnx_bytes(student, example_input)
    atomic_write_bytes(path, data)
    return path


def _write_folder(student: fx.GraphModule, path: Path) -> None:
    """``student.to_folder`` into ``path``, each file written atomically (from a scratch folder)."""
    with tempfile.TemporaryDirectory(prefix="n2n_fx_export_") as scratch:
        student.to_folder(scratch, "Student")
        for f in sorted(Path(scratch).rglob("*")):
            if f.is_file():
                atomic_write_bytes(path / f.relative_to(scratch), f.read_bytes())
