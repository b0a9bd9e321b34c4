import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module (`pytestmark = pytest.mark.usefixtures("one_thread")`): small models on a
    shared 2-core machine run several times slower when OpenMP threads fight other processes."""
    import torch   # here, not at the top: every test loads conftest, the torch-free ones too
    old = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

@pytest.fixture
def cifar10_source():
    "The CIFAR-10 source named by METACOMPRESS_CIFAR10 (set by .ci/run); tests needing real data skip without it."
    src = os.environ.get("METACOMPRESS_CIFAR10")
    if not src or not Path(src).exists(): pytest.skip("METACOMPRESS_CIFAR10 is not set: real CIFAR-10 tests skipped")
    return Path(src)
