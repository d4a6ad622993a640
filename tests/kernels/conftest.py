import pytest
import torch


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Compiled kernels on a GPU when there is one; otherwise the Triton interpreter on the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
