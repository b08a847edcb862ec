"""cnnlab: train, evaluate and understand the lecture's Inception and residual CNNs on small images."""

__version__ = "0.1.0"
