"""Models: the lecture's nets, built by name through one registry."""

from cnnlab.models._registry import (check_model_name, create_model, float32_default, list_models, model_summary,
                                     register_model, seeded)
from cnnlab.models.basic import BasicCNN
from cnnlab.models.inception import InceptionModule, InceptionNet
from cnnlab.models.resnet import ResidualBlock, ResNet
from cnnlab.models.stacks import ConvStack, plain_stack, residual_stack  # noqa: F401  (registers them)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def model_arguments(dataset_info: dict) -> dict:
    """The size arguments of a model for the data (``in_channels``, ``classes``, ``image_size`` of a dataset's
    ``info()``)."""
    return {
        "in_channels": dataset_info["in_channels"],
        "num_classes": len(dataset_info["classes"]),
        "image_size": dataset_info["image_size"],
    }


def build_model(name: str, dataset_info: dict):
    """A model sized for the data (:func:`model_arguments`); returns it and the keyword arguments that rebuild it."""
    args = model_arguments(dataset_info)
    return create_model(name, **args), args


__all__ = [
    "BasicCNN",
    "InceptionModule",
    "InceptionNet",
    "ResNet",
    "ResidualBlock",
    "build_model",
    "check_model_name",
    "count_parameters",
    "create_model",
    "float32_default",
    "list_models",
    "model_arguments",
    "model_summary",
    "register_model",
    "seeded",
]
