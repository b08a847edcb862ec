"""Models: the lecture's nets, built by name through one registry."""

from cnnlab.models._registry import create_model, list_models, model_summary, register_model
from cnnlab.models.basic import BasicCNN
from cnnlab.models.inception import InceptionModule, InceptionNet
from cnnlab.models.resnet import ResidualBlock, ResNet
from cnnlab.models.stacks import ConvStack, plain_stack, residual_stack  # noqa: F401  (registers them)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "BasicCNN",
    "InceptionModule",
    "InceptionNet",
    "ResNet",
    "ResidualBlock",
    "count_parameters",
    "create_model",
    "list_models",
    "model_summary",
    "register_model",
]
