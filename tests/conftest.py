import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture
def cifar10_source():
    "The CIFAR-10 source named by METACOMPRESS_CIFAR10 (set by .ci/run); tests needing real data skip without it."
    src = os.environ.get("METACOMPRESS_CIFAR10")
    if not src or not Path(src).exists(): pytest.skip("METACOMPRESS_CIFAR10 is not set: real CIFAR-10 tests skipped")
    return Path(src)
