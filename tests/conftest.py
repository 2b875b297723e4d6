"""Shared test settings: deterministic seeds and small thread counts for a 2-core CI machine."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
