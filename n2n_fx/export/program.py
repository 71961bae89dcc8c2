"""A student as a ``torch.export`` program (``.pt2``): the default deployment format.

``torch.export.export`` captures the student's forward as an ``ExportedProgram`` (ATen ops,
weights included) with a symbolic batch dimension named ``batch``; ``torch.export.save``
writes it and ``torch.export.load(path).module()`` runs it again, in any process, without
n2n_fx or the teacher's class.

Example:
    >>> import io
    >>> from torch import nn
    >>> student = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    >>> data = program_bytes(student, torch.randn(1, 4, 4))
    >>> program = torch.export.load(io.BytesIO(data)).module()
    >>> [tuple(program(torch.randn(b, 4, 4)).shape) for b in (1, 3)]
    [(1, 3), (3, 3)]
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["BATCH", "batch_dynamic", "batch_example", "export_program", "program_bytes"]

BATCH = "batch"  # the name of the symbolic batch dimension (also in ONNX: the input's dim_param)


def batch_dynamic() -> tuple[dict[int, torch.export.Dim]]:
    """``dynamic_shapes`` of a one-input forward: axis 0 of the input is the symbolic batch size."""
    return ({0: torch.export.Dim(BATCH)},)


def batch_example(example_input: torch.Tensor) -> torch.Tensor:
    """``example_input`` with a batch of at least 2: an example of batch size 1 would fix it at 1."""
    if example_input.shape[0] >= 2:
        return example_input
    return example_input[:1].expand(2, *example_input.shape[1:]).contiguous()


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block (a deployed student runs in eval mode), its mode restored after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def export_program(model: nn.Module, example_input: torch.Tensor) -> torch.export.ExportedProgram:
    """``model`` (in eval mode) as an ``ExportedProgram`` whose batch size is dynamic.

    ``example_input`` (batch, *input size) gives the input size; ``model`` is left as it was."""
    with evaluating(model):
        return torch.export.export(model, (batch_example(example_input),), dynamic_shapes=batch_dynamic())


def program_bytes(model: nn.Module, example_input: torch.Tensor) -> bytes:
    """The ``.pt2`` file of ``export_program(model, example_input)`` (``torch.export.save``), in memory."""
    buf = io.BytesIO()
    torch.export.save(export_program(model, example_input), buf)
    return buf.getvalue()
