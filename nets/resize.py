"""Give a freshly built network the layer widths of a state dict saved from a narrower copy of it.

A filter-pruned network keeps its architecture but has fewer channels in some layers. To load its weights into a
newly built (unpruned) instance, every affected layer is resized to the saved tensors' shapes before
``load_state_dict``; the new tensors are uninitialised placeholders that the load then overwrites. Only
parameter and buffer shapes are used, so no tracing and no pruning library is needed.

Supported layers: ``nn.Conv1d/2d/3d`` and their transposed forms (dense or depthwise), ``nn.Linear``, the
BatchNorm / InstanceNorm families, ``nn.GroupNorm`` and ``nn.LayerNorm``. A shape change in any other module is an
error that names it.

Example::

    net = MyNet()                                          # the unpruned architecture
    resize_to_state_dict(net, checkpoint["state_dict"], prefix="net.")
    net.load_state_dict({k[4:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")})
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["ResizeError", "conv_widths", "resize_to_state_dict"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.modules.batchnorm._NormBase, nn.GroupNorm)


class ResizeError(ValueError):
    """The saved shapes do not belong to this architecture (the message names the layer)."""

    user_facing = True


def conv_widths(model: nn.Module) -> dict[str, int]:
    """``{name: out_channels}`` of every conv layer of ``model`` (the widths a pruned checkpoint records)."""
    return {n: int(m.out_channels) for n, m in model.named_modules() if isinstance(m, _CONV + _CONV_T)}


def _fix_attributes(name: str, module: nn.Module, shapes: dict[str, torch.Size]) -> None:
    if isinstance(module, _CONV + _CONV_T):
        w = shapes["weight"]
        transposed = isinstance(module, _CONV_T)
        if module.groups > 1 and module.groups == module.in_channels:  # depthwise: one group per input channel
            per_group = (module.out_channels // module.groups) if not transposed else 1
            module.groups = int(w[0]) // per_group
        if transposed:  # weight (in, out / groups, *k)
            module.in_channels, module.out_channels = int(w[0]), int(w[1]) * module.groups
        else:  # weight (out, in / groups, *k)
            module.out_channels, module.in_channels = int(w[0]), int(w[1]) * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = int(shapes["weight"][0]), int(shapes["weight"][1])
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        key = "weight" if "weight" in shapes else "running_mean"
        module.num_features = int(shapes[key][0])
    elif isinstance(module, nn.GroupNorm):
        module.num_channels = int(shapes["weight"][0])
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(int(s) for s in shapes["weight"])
    else:
        raise ResizeError(
            f"the saved weights give layer {name!r} ({type(module).__name__}) other shapes "
            f"({', '.join(f'{k} {tuple(v)}' for k, v in shapes.items())}), and resize_to_state_dict can only "
            "resize conv, linear and normalisation layers. Build the network with the saved widths instead."
        )


def resize_to_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> list[str]:
    """Resizes the layers of ``model`` whose parameters/buffers have other shapes in ``state_dict``.

    Keys of ``state_dict`` are ``prefix + <name in model>`` (``prefix="net."`` for a LightningModule's
    ``net``). Missing keys are left alone (``load_state_dict`` reports them). Returns the names of the resized
    modules. Raises :class:`ResizeError` when a layer of a type it cannot resize would change shape.
    """
    changed: dict[str, dict[str, torch.Size]] = {}
    for mod_name, module in model.named_modules():
        own = {**dict(module.named_parameters(recurse=False)), **dict(module.named_buffers(recurse=False))}
        for attr, tensor in own.items():
            if tensor is None:
                continue
            key = f"{prefix}{mod_name}.{attr}" if mod_name else f"{prefix}{attr}"
            saved = state_dict.get(key)
            if saved is not None and tuple(saved.shape) != tuple(tensor.shape) and tensor.dim() > 0:
                changed.setdefault(mod_name, {})[attr] = saved.shape
    for mod_name, attrs in changed.items():
        module = model.get_submodule(mod_name) if mod_name else model
        full = {a: attrs.get(a, t.shape) for a, t in
                {**dict(module.named_parameters(recurse=False)), **dict(module.named_buffers(recurse=False))}.items()
                if t is not None}
        _fix_attributes(mod_name or type(model).__name__, module, full)
        for attr, shape in attrs.items():
            old = getattr(module, attr)
            new = torch.empty(shape, dtype=old.dtype, device=old.device)
            if isinstance(old, nn.Parameter):
                setattr(module, attr, nn.Parameter(new, requires_grad=old.requires_grad))
            else:
                module._buffers[attr] = new
    return sorted(changed)
