"""Device checks for tests: a fake accelerator on the CPU, and a count of CPU compute.

A fake accelerator: tensors "on" it hold real CPU values but say ``meta:1``.

Code under test is given the device ``FAKE`` (``torch.device("meta", 1)``) where it would be
given ``"cuda"``. Inside ``fake_device()``, moving a tensor there (``.to(FAKE)``, a factory
with ``device=FAKE``, ``module.to(FAKE)``) gives a ``OnFake`` tensor; ops on them run on the
CPU values and give ``OnFake`` results, and ``.cpu()`` / ``.item()`` / ``float()`` read the
values back, so a whole search runs. An op that mixes a fake-device tensor with a tensor that
is not on it raises as CUDA does ("Expected all tensors to be on the same device"), with the
same exceptions CUDA makes: 0-dim CPU tensors (Python-scalar-like), CPU indices, and
``copy_`` across devices. Pickling (``torch.save``, sending to workers) a fake-device tensor
raises: files and worker payloads must hold CPU tensors.

Nothing else in the project uses ``meta:1``: the surgery's shape tensors are plain ``meta``
tensors, which the fake device refuses to mix with as it refuses the CPU.

``fake_device()`` also counts what a GPU run must not do: convolutions run on the CPU (a
model evaluated or trained off the device) and uploads to the device (e.g. the same logit
cache sent again for every student). ``cpu_compute()`` counts the CPU convolutions alone, for
runs on a real GPU.

Example:
    >>> with fake_device() as seen:
    ...     x = torch.ones(2).to(FAKE)
    ...     (x * 2).device, float((x * 2).sum()), seen.uploads
    (device(type='meta', index=1), 4.0, [(2,)])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["FAKE", "OnFake", "Tracker", "fake_device", "cpu_compute", "on_fake", "devices_of"]

FAKE = torch.device("meta", 1)
_CPU = torch.device("cpu")
aten = torch.ops.aten

# ops that legitimately take tensors of two devices (copies, moves)
_CROSS_DEVICE = {
    aten.copy_.default,
    aten._to_copy.default,
    aten._copy_from.default,
    aten._copy_from_and_resize.default,
    aten.lift_fresh.default,
    aten.set_.source_Tensor,
}


def _is_fake(device: Any) -> bool:
    return device is not None and torch.device(device) == FAKE


class OnFake(torch.Tensor):
    """A tensor on the fake device: its values live in ``self.elem`` (a CPU tensor)."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> OnFake:
        r = torch.Tensor._make_wrapper_subclass(
            cls,
            elem.shape,
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            layout=elem.layout,
            device=FAKE,
            requires_grad=elem.requires_grad,
        )
        r.elem = elem
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # noqa: ARG002
        return f"OnFake({self.elem!r})"

    def __reduce_ex__(self, protocol: int) -> Any:
        raise TypeError("a tensor on the fake device reached pickle / torch.save; move it to the CPU first")

    def tolist(self) -> Any:  # CUDA tensors read back to Python lists too
        return self.elem.tolist()

    def __deepcopy__(self, memo: dict) -> torch.Tensor:
        out: torch.Tensor = OnFake(self.elem.detach().clone().requires_grad_(self.requires_grad))
        if getattr(self, "_is_param", False):  # a parameter copies as a parameter, as on CUDA
            out = torch.nn.Parameter(out, requires_grad=self.requires_grad)
        memo[id(self)] = out
        return out

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _check_devices(func, args: tuple, kwargs: dict) -> None:
    """Raise as CUDA does when ``func`` mixes the fake device with another one."""
    if func in _CROSS_DEVICE:
        return
    flat, _ = tree_flatten((args, kwargs))
    tensors = [t for t in flat if isinstance(t, torch.Tensor)]
    if not any(isinstance(t, OnFake) for t in tensors):
        return
    if func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default):
        tensors = [args[0]] + ([args[2]] if len(args) > 2 else [])  # indices may stay on the CPU
    for t in tensors:
        if isinstance(t, OnFake) or t.device == _CPU and t.dim() == 0:
            continue
        raise RuntimeError(
            f"Expected all tensors to be on the same device, but found at least two devices, {FAKE} and "
            f"{t.device}! (fake-device check in {func})"
        )


def _unwrap(x: Any) -> Any:
    return x.elem if isinstance(x, OnFake) else x


def _run(func, args: tuple, kwargs: dict) -> Any:
    _check_devices(func, args, kwargs)
    to_fake = _is_fake(kwargs.get("device"))
    if to_fake:
        kwargs = {**kwargs, "device": _CPU}
    if func in (aten._pin_memory.default, aten.is_pinned.default):
        raise RuntimeError("pin_memory needs an accelerator; the fake device has none")
    wrapped_in = any(isinstance(t, OnFake) for t in tree_flatten((args, kwargs))[0])
    if func is aten._to_copy.default and "device" in kwargs and not to_fake:
        wrapped_in = False  # moving off the fake device: the result is a plain tensor
    uargs, ukwargs = tree_map(_unwrap, args), tree_map(_unwrap, kwargs)
    out = func(*uargs, **ukwargs)
    if not (to_fake or wrapped_in):
        return out
    # in-place ops return their input: give back the same wrapper
    owners = {id(a.elem): a for a in tree_flatten(args)[0] if isinstance(a, OnFake)}

    def wrap(t: Any) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        owner = owners.get(id(t))
        return owner if owner is not None else OnFake(t)

    return tree_map(wrap, out)


_CONVS = (aten.convolution.default, aten.convolution_backward.default)


@dataclass
class Tracker:
    """What ran where while a ``fake_device()`` / ``cpu_compute()`` block was open."""

    cpu_convs: int = 0  # convolutions (forward or backward) computed on CPU tensors
    uploads: list[tuple[int, ...]] = field(default_factory=list)  # shapes of tensors moved from the CPU to FAKE

    def uploads_of(self, shape: Sequence[int]) -> int:
        """How many tensors of ``shape`` were moved to the fake device."""
        return sum(1 for s in self.uploads if s == tuple(shape))


class _CpuComputeMode(TorchDispatchMode):
    """Counts convolutions run on CPU tensors; everything else runs unchanged."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONVS and isinstance(args[0], torch.Tensor) and args[0].device == _CPU:
            self.tracker.cpu_convs += 1
        return func(*args, **kwargs)


class _FakeDeviceMode(_CpuComputeMode):
    """Sends every op that touches ``FAKE`` through ``_run``: moves and factories to it become ``OnFake``."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = tree_flatten((args, kwargs))[0]
        if not _is_fake(kwargs.get("device")) and not any(isinstance(t, OnFake) for t in flat):
            return super().__torch_dispatch__(func, types, args, kwargs)
        if func is aten._to_copy.default and _is_fake(kwargs.get("device")) and not isinstance(args[0], OnFake):
            self.tracker.uploads.append(tuple(args[0].shape))
        return _run(func, args, kwargs)


@contextlib.contextmanager
def fake_device() -> Iterator[Tracker]:
    """Inside, ``FAKE`` behaves as an accelerator would (see the module docstring)."""
    tracker = Tracker()
    # module.to(FAKE) keeps the Parameter objects, as moving to CUDA does (an optimiser built
    # before the move still holds the model's parameters)
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        with _FakeDeviceMode(tracker):
            yield tracker
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)


@contextlib.contextmanager
def cpu_compute() -> Iterator[Tracker]:
    """Count the convolutions run on the CPU inside the block (``tracker.cpu_convs``)."""
    tracker = Tracker()
    with _CpuComputeMode(tracker):
        yield tracker


def on_fake(t: torch.Tensor) -> bool:
    """Whether ``t`` lives on the fake device."""
    return isinstance(t, OnFake)


def devices_of(module: torch.nn.Module) -> set[torch.device]:
    """The devices of every parameter and buffer of ``module``."""
    return {t.device for t in [*module.parameters(), *module.buffers()]}
