"""Build teacher models by name: torchvision classifiers and the project's small models."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["build_model", "classification_models", "local_models", "model_help", "adapt_in_channels", "register_model"]

_LOCAL: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model factory ``f(num_classes, in_channels) -> nn.Module`` under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _LOCAL:
            raise ConfigError(f"model {name!r} is registered twice; pick another name")
        _LOCAL[name] = fn
        return fn

    return deco


def classification_models() -> list[str]:
    """Names of torchvision's image classifiers (``torchvision.models`` module only)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def local_models() -> list[str]:
    """Names of the models this project defines (small teachers for CPU work)."""
    from . import small  # noqa: F401  (registers the models)

    return sorted(_LOCAL)


def model_help() -> dict[str, str]:
    """Model name -> one line: the project's models (their factory's docstring), then torchvision's classifiers."""
    local_models()  # registers the project's models
    about = {name: (fn.__doc__ or "project model").strip().splitlines()[0] for name, fn in sorted(_LOCAL.items())}
    return about | {name: "torchvision classifier (random init)" for name in classification_models()}


def build_model(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Build an untrained model by name: a project model or a torchvision classifier.

    Example:
        >>> m = build_model("resnet18", num_classes=10, in_channels=1)
        >>> m.conv1.in_channels
        1
    """
    from . import small  # noqa: F401  (registers the models)

    if name in _LOCAL:
        return _LOCAL[name](num_classes=num_classes, in_channels=in_channels)
    import torchvision

    names = classification_models()
    if name not in names:
        hint = ", ".join(sorted(_LOCAL)[:6] + names[:6])
        raise ConfigError(f"unknown model {name!r}; use a torchvision classifier or a project model (e.g. {hint}, ...)")
    kwargs: dict = {"weights": None, "num_classes": num_classes}
    if name.startswith(("googlenet", "inception")):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    model = torchvision.models.get_model(name, **kwargs)
    if in_channels != 3:
        model = adapt_in_channels(model, in_channels)
    return model


def adapt_in_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """Return a copy of ``model`` whose first convolution takes ``in_channels`` channels.

    The new first-layer weights are the mean of the old ones over input channels
    (repeated), so a model trained on RGB keeps its response to grey images.
    """
    model = copy.deepcopy(model)
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels == in_channels:
                    return model
                if child.groups != 1:
                    raise ConfigError(
                        f"cannot adapt {type(model).__name__}: its first conv is grouped; pass a model built for {in_channels} channels"
                    )
                new = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    1,
                    child.bias is not None,
                    child.padding_mode,
                )
                with torch.no_grad():
                    mean = child.weight.mean(dim=1, keepdim=True)
                    new.weight.copy_(mean.expand(-1, in_channels, -1, -1) * (3.0 / in_channels))
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
                setattr(parent, child_name, new)
                return model
    raise ConfigError(f"{type(model).__name__} has no Conv2d to adapt to {in_channels} input channels")
