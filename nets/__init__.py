"""Plain ``nn.Module`` architectures, one family per module, and a name registry.

Importing the package imports every module in it, so each family registers itself; build a network with
``create_net(name, num_classes, ...)``.
"""

import importlib
import pkgutil

from .registry import create_net, list_nets, register_net

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")  # registration side effects

__all__ = ["create_net", "list_nets", "register_net"]
