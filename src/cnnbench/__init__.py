"""cnnbench: compare CNN architectures on MNIST-like data, faithfully and fast."""

__version__ = "0.1.0"
