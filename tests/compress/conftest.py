"""The tiny data as a fixture; the models and data themselves are in tiny_models.py."""

import pytest

from tiny_models import patterned_documents
from tinythink.compress.data import PackedData, pack


@pytest.fixture
def tiny_data():
    return PackedData(pack(patterned_documents(64), 32), seed=1), \
        PackedData(pack(patterned_documents(16, seed=9), 32), seed=0, split="heldout")
