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
import importlib
from collections.abc import Callable, Mapping
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
    available = ", ".join(candidates) if candidates else "(none registered)"
    return ValueError(f"Unknown {what} {name!r}.{hint} Available: {available}")


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
    if not isinstance(name, str):
        raise TypeError(f"create_net: the name must be a string, got {type(name).__name__}; an nn.Module needs no "
                        "registry (pass it to the LightningModule directly)")
    if name.startswith(TORCHVISION_PREFIX):
        return _create_torchvision(name, num_classes, in_channels, **kwargs)
    if name not in _REGISTRY:
        raise _unknown(name, list_nets(), "network")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


# ---------------------------------------------------------------------------------------------- net arguments
def instantiate_class_path(spec: Mapping[str, Any], arg: str = "net") -> nn.Module:
    """Build ``{"class_path": "pkg.mod.Class", "init_args": {...}}`` (the LightningCLI/jsonargparse form).

    Nested ``{"class_path": ...}`` values inside ``init_args`` are built too. The class must be an ``nn.Module``.
    """
    path = spec.get("class_path")
    if not isinstance(path, str) or "." not in path:
        raise ValueError(f"{arg}: a net description needs class_path 'package.module.Class', got {path!r}")
    module_name, _, cls_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"{arg}: cannot import class_path {path!r} ({type(err).__name__}: {err}). Make the module that defines "
            f"the net importable, or pass the net itself ({arg}=MyNet(...))."
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"{arg}: class_path {path!r} is not an nn.Module subclass")
    kwargs = {k: (instantiate_class_path(v, f"{arg}.init_args.{k}") if isinstance(v, Mapping) and "class_path" in v
                  else v) for k, v in dict(spec.get("init_args") or {}).items()}
    return cls(**kwargs)


def resolve_net(net: Any, *, arg: str = "net", num_classes: int | None = None, in_channels: int = 3,
                kwargs: Mapping[str, Any] | None = None, owner: str = "") -> nn.Module:
    """The ``nn.Module`` a LightningModule argument stands for.

    * an ``nn.Module``: used as it is (``kwargs`` must be empty: they only apply to a registry name);
    * a ``{"class_path": ..., "init_args": {...}}`` mapping (LightningCLI's description of a module): built;
    * a string: ``create_net(name, num_classes, in_channels, **kwargs)`` (this package's registry).

    ``arg`` and ``owner`` name the argument in error messages (e.g. ``ImageClassifier(net=...)``).
    """
    where = f"{owner}({arg}=...)" if owner else arg
    if isinstance(net, nn.Module):
        if kwargs:
            raise ValueError(
                f"{where}: {arg} is an nn.Module ({type(net).__name__}), so {arg}_kwargs "
                f"{dict(kwargs)} cannot be applied; build the module with those arguments yourself and drop "
                f"{arg}_kwargs."
            )
        return net
    if isinstance(net, Mapping) and "class_path" in net:
        if kwargs:
            raise ValueError(f"{where}: {arg} is a class_path description; put its arguments under init_args, "
                             f"not {arg}_kwargs.")
        return instantiate_class_path(net, arg)
    if net is None:
        raise ValueError(
            f"{where}: {arg} is None. Pass the network: an nn.Module ({arg}=MyNet()), a name from "
            f"nets.list_nets(), or a class_path/init_args description. A checkpoint of a module whose {arg} was "
            f"passed as an nn.Module does not store how to build it: give it again when loading, e.g. "
            f"{owner or 'Module'}.load_from_checkpoint(path, {arg}=MyNet())."
        )
    if isinstance(net, str):
        if num_classes is None:
            raise ValueError(f"{where}: num_classes is needed to build the registry net {net!r}")
        try:
            return create_net(net, num_classes=num_classes, in_channels=in_channels, **dict(kwargs or {}))
        except ValueError as err:
            if not str(err).startswith("Unknown network"):
                raise
            raise ValueError(
                f"{where}: {err}. Pass your own network as an nn.Module instead ({arg}=MyNet()), or register "
                "its name with nets.register_net in every process that builds or loads this module."
            ) from None
    raise TypeError(
        f"{where}: {arg} must be an nn.Module, a registry name (str) or a class_path/init_args mapping, got "
        f"{type(net).__name__}."
    )
