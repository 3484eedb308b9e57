"""Fixtures of the model tests."""

import pytest

from tinythink.model import native


@pytest.fixture
def no_kernels(monkeypatch):
    """tinythink's own kernels switched off (TINYTHINK_KERNELS=0), as where they cannot be built; loaded again by
    the next test that asks for them."""
    monkeypatch.setenv("TINYTHINK_KERNELS", "0")
    native.library.cache_clear()
    yield
    native.library.cache_clear()
