"""Plain ``nn.Module`` architectures, one family per module, and a name registry.

Importing the package registers every family; build a network with ``create_net(name, num_classes, ...)``.
"""

from . import resnet10, resnet_cifar, small_cnn, vgg_cifar  # noqa: F401  (registration side effects)
from . import global_layer, sicnn  # noqa: F401  (issue 7: Global layer, SI-CNN)
from .registry import create_net, list_nets, register_net

__all__ = ["create_net", "list_nets", "register_net"]
