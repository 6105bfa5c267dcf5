"""Name -> constructor registry for the project's networks.

Every registered constructor is called as ``fn(num_classes=..., in_channels=..., **kwargs)`` and returns a plain
``nn.Module`` that maps ``(B, in_channels, H, W)`` to ``(B, num_classes)`` logits.

Names starting with ``torchvision.`` are not registered: they build the torchvision classification model of
that name (``torchvision.resnet34``, ``torchvision.mobilenet_v2``, ...) with ``weights=None``. Nothing is ever
downloaded.

Example::

    from nets import create_net
    model = create_net("resnet56", num_classes=10)
    model = create_net("resnet56", num_classes=10, block_widths=[...])  # an L1-pruned ResNet-56
    model = create_net("torchvision.resnet18", num_classes=100, in_channels=1)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

TORCHVISION_PREFIX = "torchvision."

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_net(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``fn(num_classes, in_channels, **kwargs) -> nn.Module`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_net: the name must be a non-empty string, got {name!r}")
    if name.startswith(TORCHVISION_PREFIX):
        raise ValueError(f"register_net: names starting with {TORCHVISION_PREFIX!r} are reserved ({name!r})")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        old = _REGISTRY.get(name)
        same = old is not None and (old.__module__, old.__qualname__) == (fn.__module__, fn.__qualname__)
        if old is not None and not same:  # re-registering the same function (module reload) is fine
            raise ValueError(
                f"register_net: {name!r} is already registered to {old.__module__}.{old.__qualname__}"
            )
        _REGISTRY[name] = fn
        return fn

    return decorator


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_nets(include_torchvision: bool = False) -> list[str]:
    """Sorted registered names; with ``include_torchvision`` also every ``torchvision.<classifier>`` name."""
    names = sorted(_REGISTRY)
    if include_torchvision:
        names += [TORCHVISION_PREFIX + n for n in _torchvision_names()]
    return names


def _unknown(name: str, candidates: list[str], what: str) -> ValueError:
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ValueError(f"Unknown {what} {name!r}.{hint} Available: {', '.join(candidates)}")


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first ``nn.Conv2d`` of ``model`` (definition order) for one reading ``in_channels`` channels."""
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if module.groups != 1:
            raise ValueError(f"cannot change in_channels of {type(model).__name__}: its first conv is grouped")
        new = nn.Conv2d(
            in_channels,
            module.out_channels,
            kernel_size=module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, new)
        return
    raise ValueError(f"cannot change in_channels of {type(model).__name__}: it has no nn.Conv2d")


def _create_torchvision(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    import torchvision

    tv_name = name[len(TORCHVISION_PREFIX) :]
    available = _torchvision_names()
    if tv_name not in available:
        raise _unknown(name, [TORCHVISION_PREFIX + n for n in available], "torchvision classification model")
    for key in ("weights", "weights_backbone", "pretrained"):
        if kwargs.get(key) is not None and kwargs.get(key) is not False:
            raise ValueError(f"create_net({name!r}): pretrained weights are never loaded; drop {key}=")
        kwargs.pop(key, None)
    model = torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def create_net(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name`` (or ``torchvision.<model>``), randomly initialised.

    Raises ``ValueError`` for an unknown name, listing close matches and the available names.
    """
    if name.startswith(TORCHVISION_PREFIX):
        return _create_torchvision(name, num_classes, in_channels, **kwargs)
    if name not in _REGISTRY:
        raise _unknown(name, list_nets(), "network")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
